// The time range picker: presets plus free `from`/`to` fields that take
// relative (`now-2h`) and absolute (`2026-11-22 10:00`) times.

import { h } from "../dom";
import { PRESETS, describeRange, resolveRange, type TimeRange } from "../timerange";

/** A picker bound to a range; `onChange` gets the new range. */
export class TimePicker {
  readonly el: HTMLElement;
  private summary: HTMLButtonElement;
  private panel: HTMLElement;
  private fromIn: HTMLInputElement;
  private toIn: HTMLInputElement;
  private err: HTMLElement;
  private range: TimeRange = { from: "now-1h", to: "now" };

  constructor(private onChange: (r: TimeRange) => void) {
    this.fromIn = h("input", { type: "text", "aria-label": "From", placeholder: "now-1h", size: 22 });
    this.toIn = h("input", { type: "text", "aria-label": "To", placeholder: "now", size: 22 });
    this.err = h("div", { class: "field-error", role: "alert" });
    this.panel = h(
      "div",
      { class: "popover", hidden: true, role: "dialog", "aria-label": "Time range" },
      h(
        "div",
        { class: "presets" },
        PRESETS.map((p) =>
          h("button", { type: "button", class: "ghost", onclick: () => this.pick({ from: p.from, to: "now" }) }, p.label),
        ),
      ),
      h(
        "form",
        {
          class: "abs",
          onsubmit: (e: Event) => {
            e.preventDefault();
            this.pick({ from: this.fromIn.value.trim(), to: this.toIn.value.trim() || "now" });
          },
        },
        h("label", null, "From ", this.fromIn),
        h("label", null, "To ", this.toIn),
        h("div", { class: "hint" }, "now-15m, 2h, 2026-11-22 10:00, 2026-11-22T10:00:00Z or Unix ms"),
        this.err,
        h("button", { type: "submit" }, "Apply"),
      ),
    );
    this.summary = h("button", {
      type: "button",
      class: "range-button",
      "aria-haspopup": "dialog",
      "data-testid": "time-range",
      onclick: () => this.toggle(),
    });
    this.el = h("div", { class: "timepicker" }, this.summary, this.panel);
    this.el.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !this.panel.hidden) {
        this.toggle(false);
        this.summary.focus();
      }
    });
    document.addEventListener("click", (e) => {
      if (!this.el.contains(e.target as Node)) this.toggle(false);
    });
    this.set(this.range);
  }

  /** Shows a range (from the URL). */
  set(r: TimeRange): void {
    this.range = r;
    this.summary.textContent = `${describeRange(r)} ▾`;
    this.fromIn.value = r.from;
    this.toIn.value = r.to;
    this.err.textContent = "";
  }

  private toggle(open = this.panel.hidden): void {
    this.panel.hidden = !open;
    this.summary.setAttribute("aria-expanded", String(open));
    if (open) this.fromIn.focus();
  }

  private pick(r: TimeRange): void {
    const res = resolveRange(r, Date.now());
    if (typeof res === "string") {
      this.err.textContent = res;
      return;
    }
    this.toggle(false);
    this.set(r);
    this.onChange(r);
  }
}
