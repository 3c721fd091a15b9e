import { describe, expect, it } from "vitest";
import { apply, contextAt, rank } from "./promcomplete";

const at = (s: string) => contextAt(s.replace("|", ""), s.indexOf("|"));

describe("completion context", () => {
  it("offers names for a word", () => {
    expect(at("rate(http_req|")).toEqual({ kind: "name", prefix: "http_req", from: 5 });
  });
  it("offers labels of the metric inside braces", () => {
    expect(at('http_requests_total{code="200", me|')).toMatchObject({ kind: "label", prefix: "me", metric: "http_requests_total", braces: true });
    expect(at("up{|")).toMatchObject({ kind: "label", prefix: "", metric: "up" });
  });
  it("offers label values inside quotes", () => {
    expect(at('up{job="api|')).toMatchObject({ kind: "value", prefix: "api", label: "job", metric: "up" });
    expect(at('up{job=~"a.*|"}')).toMatchObject({ kind: "value", label: "job" });
  });
  it("offers labels in grouping clauses", () => {
    expect(at("sum by (ser|) (up)")).toMatchObject({ kind: "label", prefix: "ser", metric: null, braces: false });
  });
  it("offers nothing in ranges, numbers or after operators", () => {
    expect(at("rate(x[5m|")).toEqual({ kind: "none" });
    expect(at('up{job=|')).toEqual({ kind: "none" });
    expect(at("|")).toEqual({ kind: "none" });
  });
});

describe("applying a completion", () => {
  it("replaces the word being typed", () => {
    const s = "rate(http_re[5m])";
    const c = contextAt(s, 12);
    expect(apply(s, 12, c, "http_requests_total")).toEqual({ text: "rate(http_requests_total[5m])", cursor: 24 });
  });
  it("adds =\" after a label name in braces and closes the value", () => {
    const s = "up{jo}";
    const c = contextAt(s, 5);
    expect(apply(s, 5, c, "job")).toEqual({ text: 'up{job=""}', cursor: 8 });
    const v = 'up{job="a}';
    const cv = contextAt(v, 9);
    expect(apply(v, 9, cv, 'we"ird')).toEqual({ text: 'up{job="we\\"ird"}', cursor: 16 });
  });
  it("ranks prefix matches before substring matches", () => {
    expect(rank(["b_up", "up_x", "down", "up"], "up")).toEqual(["up", "up_x", "b_up"]);
  });
});
