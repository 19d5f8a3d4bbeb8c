// The table of every target: a click on a header sorts it (again: the other way), the text box keeps the rows
// holding its text, the select the rows of one outcome or verdict. Reads only the page; asks nothing of the network.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var table = document.getElementById("targets");
  if (!table) {
    return;
  }
  var body = table.tBodies[0];
  var rows = Array.prototype.map.call(body.rows, function (el, index) {
    return { el: el, index: index, text: el.textContent.toLowerCase() };
  });
  var box = document.getElementById("filter");
  var select = document.getElementById("filter-value");
  var shown = document.getElementById("shown");

  function filter() {
    var needle = box.value.trim().toLowerCase();
    var wanted = select.value;
    var count = 0;
    rows.forEach(function (row) {
      var visible = (!needle || row.text.indexOf(needle) !== -1) && (!wanted || row.el.getAttribute("data-key") === wanted);
      row.el.hidden = !visible;
      count += visible ? 1 : 0;
    });
    shown.textContent = count + " of " + data.total + " shown";
  }

  function sortBy(th, column) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.hasAttribute("data-numeric");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
      other.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var keyed = rows.map(function (row) {
      var raw = row.el.cells[column].getAttribute("data-sort");
      var value = raw === "" ? null : numeric ? parseFloat(raw) : raw.toLowerCase();
      return { row: row, value: value };
    });
    keyed.sort(function (a, b) {
      if (a.value === b.value) {
        return a.row.index - b.row.index;
      }
      if (a.value === null) {
        return 1; // empty cells last, either way
      }
      if (b.value === null) {
        return -1;
      }
      var order = numeric ? a.value - b.value : a.value.localeCompare(b.value, "en", { numeric: true });
      return (ascending ? order : -order) || a.row.index - b.row.index;
    });
    var fragment = document.createDocumentFragment();
    rows = keyed.map(function (item) {
      fragment.appendChild(item.row.el);
      return item.row;
    });
    body.appendChild(fragment);
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
    th.querySelector("button").addEventListener("click", function () {
      sortBy(th, column);
    });
  });
  box.addEventListener("input", filter);
  select.addEventListener("change", filter);
  filter();
})();
