import { describe, expect, it } from "vitest";
import { isPairing, isReconnecting } from "./devices";

describe("a device's card mode", () => {
  it("a linked device that is connecting again is reconnecting, with nothing to scan", () => {
    const d = { status: "connecting" as const, jid: "34600111222:3@s.whatsapp.net" };
    expect(isReconnecting(d)).toBe(true);
    expect(isPairing(d)).toBe(false);
  });

  it("a device never linked that is connecting or shows a QR is pairing", () => {
    expect(isPairing({ status: "connecting", jid: null })).toBe(true);
    expect(isPairing({ status: "qr_pending", jid: null })).toBe(true);
    expect(isReconnecting({ status: "connecting", jid: null })).toBe(false);
  });

  it("connected and disconnected devices are neither", () => {
    for (const status of ["connected", "disconnected", "logged_out"] as const) {
      expect(isPairing({ status, jid: "x@s.whatsapp.net" })).toBe(false);
      expect(isReconnecting({ status, jid: "x@s.whatsapp.net" })).toBe(false);
    }
  });
});
