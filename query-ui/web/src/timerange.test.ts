import { describe, expect, it } from "vitest";
import { describeRange, formatDurationShort, parseDuration, parseTimeExpr, pickStep, resolveRange } from "./timerange";

const NOW = Date.UTC(2026, 10, 22, 12, 0, 0);

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h30m", 5_400_000],
    ["2d", 172_800_000],
    ["1w", 604_800_000],
    ["1.5h", 5_400_000],
  ])("%s", (s, ms) => expect(parseDuration(s)).toBe(ms));
  it.each(["", "5", "m5", "5x", "5m junk", "-5m"])("rejects %j", (s) => expect(parseDuration(s)).toBeNull());
  it("formats back", () => {
    expect(formatDurationShort(5_400_000)).toBe("1h30m");
    expect(formatDurationShort(1500)).toBe("1s500ms");
  });
});

describe("parseTimeExpr", () => {
  it.each([
    ["now", NOW],
    ["now-15m", NOW - 900_000],
    ["now - 1h", NOW - 3_600_000],
    ["now+5m", NOW + 300_000],
    ["15m", NOW - 900_000],
    ["1763812800000", 1763812800000],
    ["1763812800", 1763812800000],
    ["2026-11-22T10:00:00Z", Date.UTC(2026, 10, 22, 10)],
    ["2026-11-22T10:00:00.250+01:00", Date.UTC(2026, 10, 22, 9, 0, 0, 250)],
  ])("%s", (s, ms) => expect(parseTimeExpr(s, NOW)).toBe(ms));
  it("reads zone-less date-times as local time", () => {
    expect(parseTimeExpr("2026-11-22 10:00", NOW)).toBe(new Date(2026, 10, 22, 10, 0).getTime());
    expect(parseTimeExpr("2026-11-22", NOW)).toBe(new Date(2026, 10, 22).getTime());
  });
  it.each(["", "yesterday", "now-", "now-5x", "2026-13-45T99:99", "12"])("rejects %j", (s) =>
    expect(parseTimeExpr(s, NOW)).toBeNull(),
  );
});

describe("resolveRange", () => {
  it("resolves relative ranges against now", () => {
    expect(resolveRange({ from: "now-1h", to: "now" }, NOW)).toEqual({ startMs: NOW - 3_600_000, endMs: NOW });
  });
  it("explains unreadable and reversed ranges", () => {
    expect(resolveRange({ from: "soon", to: "now" }, NOW)).toMatch(/start time "soon"/);
    expect(resolveRange({ from: "now", to: "now-1h" }, NOW)).toMatch(/before the end/);
  });
});

describe("describeRange and pickStep", () => {
  it("names presets and other ranges", () => {
    expect(describeRange({ from: "now-15m", to: "now" })).toBe("Last 15 minutes");
    expect(describeRange({ from: "now-2h30m", to: "now" })).toBe("Last 2h30m");
    expect(describeRange({ from: "1763805600000", to: "1763809200000" })).toBe("2025-11-22 10:00:00Z → 2025-11-22 11:00:00Z");
  });
  it("picks nice steps", () => {
    expect(pickStep(0, 3_600_000, 240)).toBe(15);
    expect(pickStep(0, 300_000, 240)).toBe(2);
    expect(pickStep(0, 7 * 86_400_000, 240)).toBe(3600);
  });
});
