// The header's session widget: the tenant shown (with a switcher when the
// token reaches others: a list, or a text field for a token of every
// tenant) and the sign-out button.

import { h, replace } from "../dom";
import { signInMessage, switchTenant, tenantChoice, type SessionInfo } from "../session";

/** Callbacks of the widget. */
export interface AccountActions {
  /** The session moved to another tenant. */
  switched(s: SessionInfo): void;
  /** The user asked to sign out. */
  signOut(): void;
}

/** Fills `el` with the widget for session `s`. */
export function renderAccount(el: HTMLElement, s: SessionInfo, act: AccountActions): void {
  el.dataset.tenant = s.tenant;
  el.title = `Signed in with token "${s.name}" until ${new Date(s.expires).toLocaleString()}`;
  const err = h("span", { class: "field-error", role: "alert", "data-testid": "tenant-error" });
  const go = (tenant: string) => {
    if (!tenant.trim() || tenant.trim() === s.tenant) return;
    err.textContent = "";
    switchTenant(tenant)
      .then((n) => act.switched(n))
      .catch((e: unknown) => (err.textContent = signInMessage(e)));
  };
  const choice = tenantChoice(s);
  let control: HTMLElement;
  if (choice.kind === "select") {
    const sel = h(
      "select",
      { "aria-label": "Tenant", "data-testid": "tenant-select" },
      choice.options.map((t) => h("option", { value: t }, t)),
    );
    sel.value = s.tenant;
    sel.addEventListener("change", () => go(sel.value));
    control = sel;
  } else if (choice.kind === "text") {
    const input = h("input", {
      type: "text",
      value: s.tenant,
      class: "tenant-input",
      "aria-label": "Tenant",
      spellcheck: "false",
      "data-testid": "tenant-input",
    });
    control = h(
      "form",
      { class: "tenant-form", onsubmit: (e: Event) => (e.preventDefault(), go(input.value)) },
      input,
      h("button", { type: "submit", class: "ghost" }, "Switch"),
    );
  } else {
    control = h("strong", { "data-testid": "tenant-current" }, s.tenant);
  }
  replace(
    el,
    h("span", { class: "muted" }, "Tenant"),
    control,
    err,
    h("button", { type: "button", class: "ghost", "data-testid": "sign-out", onclick: () => act.signOut() }, "Sign out"),
  );
}
