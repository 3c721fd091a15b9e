import { describe, expect, it } from "vitest";
import { readState, sameState, withChanges, writeState } from "./urlstate";

const DEFAULTS = { q: "", from: "now-1h", to: "now", service: "" };

describe("URL state", () => {
  it("reads missing keys as defaults and ignores unknown keys", () => {
    expect(readState("?q=error&x=1", DEFAULTS)).toEqual({ q: "error", from: "now-1h", to: "now", service: "" });
  });
  it("writes only what differs from the defaults, in declared order", () => {
    expect(writeState({ ...DEFAULTS, service: "cart", q: "a b" }, DEFAULTS)).toBe("?q=a+b&service=cart");
    expect(writeState(DEFAULTS, DEFAULTS)).toBe("");
  });
  it("round-trips awkward values", () => {
    const s = withChanges(DEFAULTS, { q: 'attributes.url:"/a?b=c&d=e" AND NOT x#y', from: "1763805600000" });
    const back = readState(writeState(s, DEFAULTS), DEFAULTS);
    expect(back).toEqual(s);
    expect(sameState(back, s, DEFAULTS)).toBe(true);
    expect(sameState(back, DEFAULTS, DEFAULTS)).toBe(false);
  });
  it("keeps an explicitly empty value that differs from a non-empty default", () => {
    const d = { hops: "1", cp: "1" };
    expect(readState(writeState({ hops: "1", cp: "" }, d), d)).toEqual({ hops: "1", cp: "" });
  });
});
