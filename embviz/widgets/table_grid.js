// TableGrid (embviz/widgets/table_grid.py): every row as data, only the rows in view drawn.
// Edits go back to Python as {type: "edit", table, row, field, text}; Python validates and
// answers with {type: "patch", rows: [...]}, whose errors are marked at their cells here.
// No validation happens in the browser.

const ROW_HEIGHT = 30;
const OVERSCAN = 8;

function cellClass(column) {
  // Editable fields: embviz-num-embeddings, ...; byte columns: embviz-bytes-total-bytes, ...
  const prefix = column.kind === "bytes" ? "embviz-bytes-" : "embviz-";
  return prefix + column.key.replace(/_/g, "-");
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "embviz-grid";
  const head = document.createElement("div");
  head.className = "embviz-grid-head";
  const body = document.createElement("div");
  body.className = "embviz-grid-body";
  const spacer = document.createElement("div");
  spacer.className = "embviz-grid-spacer";
  body.appendChild(spacer);
  root.appendChild(head);
  root.appendChild(body);
  el.appendChild(root);

  let byId = new Map();
  const drawn = new Map(); // row id -> element

  function index() {
    byId = new Map();
    for (const row of model.get("rows")) byId.set(row.id, row);
  }

  function send(message) {
    model.send(message);
  }

  function drawHead() {
    head.replaceChildren();
    const [sortKey, ascending] = model.get("sort") || [];
    for (const column of model.get("columns")) {
      const cell = document.createElement("div");
      cell.className = "embviz-grid-cell embviz-head-" + column.key.replace(/_/g, "-");
      cell.style.width = column.width || "90px";
      let label = column.label;
      if (column.sortable) {
        cell.classList.add("embviz-sortable");
        if (sortKey === column.key) label += ascending ? " ▲" : " ▼";
        cell.addEventListener("click", () => send({ type: "sort", by: column.key }));
      }
      cell.textContent = label;
      if (column.title) cell.title = column.title;
      head.appendChild(cell);
    }
  }

  function fillRow(element, row) {
    element.dataset.table = row.values.name;
    element.classList.toggle("embviz-row-invalid", Object.keys(row.errors).length > 0);
    const selected = new Set(model.get("selected"));
    for (const column of model.get("columns")) {
      const cell = element.querySelector("." + cellClass(column));
      if (!cell) continue;
      const error = row.errors[column.key] || "";
      cell.classList.toggle("embviz-invalid", error !== "");
      if (column.kind === "text") {
        const input = cell.querySelector("input");
        const value = String(row.values[column.key] ?? "");
        // Never move the caret of the field being typed in when Python echoes it back.
        if (input.value !== value && document.activeElement !== input) input.value = value;
        cell.title = error;
      } else if (column.kind === "select") {
        const select = cell.querySelector("select");
        if (select.value !== row.values[column.key]) select.value = row.values[column.key];
        cell.title = error;
      } else if (column.kind === "check") {
        cell.querySelector("input").checked = Boolean(row.values[column.key]);
      } else if (column.kind === "selection") {
        cell.querySelector("input").checked = selected.has(row.id);
      } else if (column.kind === "bytes") {
        const [exact, human] = row.bytes[column.key] || [null, ""];
        cell.textContent = human;
        cell.dataset.bytes = exact === null ? "" : String(exact);
        cell.title = exact === null ? "" : Number(exact).toLocaleString("en-US") + " bytes";
      } else if (column.kind === "message") {
        cell.textContent = row.message || "";
        cell.title = row.message || "";
        cell.classList.toggle("embviz-has-error", Object.keys(row.errors).length > 0);
      }
    }
  }

  function makeRow(row) {
    const element = document.createElement("div");
    element.className = "embviz-row";
    element.dataset.id = String(row.id);
    for (const column of model.get("columns")) {
      const cell = document.createElement("div");
      cell.className = "embviz-grid-cell " + cellClass(column);
      if (column.kind === "message") cell.classList.add("embviz-row-message");
      cell.style.width = column.width || "90px";
      if (column.kind === "text") {
        const input = document.createElement("input");
        input.type = "text";
        input.spellcheck = false;
        input.addEventListener("input", () =>
          send({
            type: "edit",
            table: element.dataset.table,
            row: row.id,
            field: column.key,
            text: input.value,
          }),
        );
        cell.appendChild(input);
      } else if (column.kind === "select") {
        const select = document.createElement("select");
        for (const option of column.options) {
          const item = document.createElement("option");
          item.value = option;
          item.textContent = option;
          select.appendChild(item);
        }
        select.addEventListener("change", () =>
          send({
            type: "edit",
            table: element.dataset.table,
            row: row.id,
            field: column.key,
            text: select.value,
          }),
        );
        cell.appendChild(select);
      } else if (column.kind === "check" || column.kind === "selection") {
        const box = document.createElement("input");
        box.type = "checkbox";
        box.addEventListener("change", () => {
          if (column.kind === "check") {
            send({
              type: "edit",
              table: element.dataset.table,
              row: row.id,
              field: column.key,
              text: box.checked,
            });
          } else {
            const ids = new Set(model.get("selected"));
            if (box.checked) ids.add(row.id);
            else ids.delete(row.id);
            model.set("selected", [...ids]);
            model.save_changes();
          }
        });
        cell.appendChild(box);
      } else if (column.kind === "actions") {
        for (const [action, text, tip] of column.actions) {
          const button = document.createElement("button");
          button.className = "embviz-action embviz-" + action;
          button.textContent = text;
          button.title = tip;
          button.addEventListener("click", () =>
            send({ type: "action", action, table: element.dataset.table, row: row.id }),
          );
          cell.appendChild(button);
        }
      }
      element.appendChild(cell);
    }
    fillRow(element, row);
    return element;
  }

  function drawRows(force) {
    const view = model.get("view");
    // At most `height` pixels: a short config (or search result) takes only its rows.
    body.style.height = Math.min(model.get("height"), view.length * ROW_HEIGHT + 2) + "px";
    spacer.style.height = view.length * ROW_HEIGHT + "px";
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(
      view.length,
      Math.ceil((body.scrollTop + model.get("height")) / ROW_HEIGHT) + OVERSCAN,
    );
    const wanted = new Map();
    for (let i = first; i < last; i++) wanted.set(view[i], i);
    for (const [id, element] of drawn) {
      if (force || !wanted.has(id)) {
        element.remove();
        drawn.delete(id);
      }
    }
    for (const [id, i] of wanted) {
      const row = byId.get(id);
      if (!row) continue;
      let element = drawn.get(id);
      if (!element) {
        element = makeRow(row);
        drawn.set(id, element);
        spacer.appendChild(element);
      }
      element.style.top = i * ROW_HEIGHT + "px";
    }
  }

  function onPatch(message) {
    if (!message || message.type !== "patch") return;
    const rows = model.get("rows");
    const position = new Map(rows.map((row, i) => [row.id, i]));
    for (const row of message.rows) {
      // Python's copy was changed in place; keep this one equal for views opened later.
      if (position.has(row.id)) rows[position.get(row.id)] = row;
      byId.set(row.id, row);
      const element = drawn.get(row.id);
      if (element) fillRow(element, row);
    }
  }

  index();
  drawHead();
  drawRows(true);
  body.addEventListener("scroll", () => drawRows(false));
  const onRows = () => {
    index();
    drawRows(true);
  };
  const onView = () => drawRows(false);
  const onSelected = () => {
    for (const [id, element] of drawn) fillRow(element, byId.get(id));
  };
  model.on("change:rows", onRows);
  model.on("change:view", onView);
  model.on("change:selected", onSelected);
  model.on("change:sort", drawHead);
  model.on("change:columns", () => {
    drawHead();
    drawRows(true);
  });
  model.on("msg:custom", onPatch);
  return () => {
    model.off("change:rows", onRows);
    model.off("change:view", onView);
    model.off("change:selected", onSelected);
    model.off("change:sort", drawHead);
    model.off("msg:custom", onPatch);
  };
}

export default { render };
