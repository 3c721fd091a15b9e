// Key/value tables for attributes and resources, values always as text.

import { h } from "../dom";

/** A value as text: strings as-is, everything else as JSON. */
export function valueText(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === null || v === undefined) return "";
  return JSON.stringify(v);
}

/** Flattens nested objects to dotted keys (`a.b.c`). */
export function flatten(obj: Record<string, unknown>, prefix = ""): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [k, v] of Object.entries(obj ?? {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v as Record<string, unknown>, key));
    else out.push([key, v]);
  }
  return out.sort((a, b) => a[0].localeCompare(b[0]));
}

/** A table of attributes; `actions` adds buttons per row. */
export function kvTable(
  obj: Record<string, unknown>,
  actions?: (key: string, value: unknown) => HTMLElement[],
): HTMLElement {
  const rows = flatten(obj);
  if (!rows.length) return h("p", { class: "muted" }, "none");
  return h(
    "table",
    { class: "kv" },
    h(
      "tbody",
      null,
      rows.map(([k, v]) =>
        h("tr", null, h("th", { scope: "row" }, k), h("td", null, h("span", { class: "val" }, valueText(v)), actions ? actions(k, v) : null)),
      ),
    ),
  );
}
