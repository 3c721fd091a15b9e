// The sign-in page, shown in place of the current page while the UI is not
// signed in to a collector that asks for it. Signing in keeps the URL, so
// the page the user was on comes back.

import { h } from "../dom";
import { signIn, signInMessage, type SessionInfo } from "../session";

/** The sign-in form; `done` gets the new session. `note` says why it shows. */
export function signInPage(done: (s: SessionInfo) => void, note = ""): HTMLElement {
  const token = h("input", {
    type: "password",
    name: "token",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
    "data-testid": "signin-token",
    placeholder: "pscp_…",
  });
  const tenant = h("input", {
    type: "text",
    name: "tenant",
    autocomplete: "off",
    spellcheck: "false",
    "data-testid": "signin-tenant",
    placeholder: "the token's first tenant",
  });
  const err = h("div", { class: "field-error", role: "alert", "data-testid": "signin-error" });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "signin-form",
      onsubmit: (e: Event) => {
        e.preventDefault();
        err.textContent = "";
        submit.disabled = true;
        signIn(token.value, tenant.value)
          .then((s) => {
            token.value = "";
            done(s);
          })
          .catch((e: unknown) => {
            err.textContent = signInMessage(e);
            token.select();
          })
          .finally(() => (submit.disabled = false));
      },
    },
    h("label", null, "Token", token),
    h("label", null, "Tenant ", h("span", { class: "hint" }, "(optional; needed for a token of every tenant)"), tenant),
    err,
    submit,
  );
  const page = h(
    "section",
    { class: "page signin", "data-testid": "signin" },
    h("h1", null, "Sign in"),
    note ? h("p", { class: "status status-note", role: "status" }, note) : null,
    h(
      "p",
      { class: "muted" },
      "This collector asks for a token with the read scope (made with ",
      h("code", null, "periscope token new"),
      " and listed in its auth file). The token is kept by the collector's session cookie, not by this page.",
    ),
    form,
  );
  queueMicrotask(() => token.focus());
  return page;
}
