import { create } from "zustand";
import { devicesApi } from "../api/endpoints";
import type { Device, QrCode } from "../api/types";
import { onSessionEnd } from "../lib/bus";

export const PAIRING_STATUSES: Device["status"][] = ["connecting", "qr_pending"];

/** A linked device on its way back (its worker died or the connection dropped):
 *  WhatsApp still knows it, so there is nothing to scan. */
export const isReconnecting = (d: Pick<Device, "status" | "jid">): boolean =>
  d.status === "connecting" && !!d.jid;

/** A device being linked: the QR code (or pairing code) is what it waits for. */
export const isPairing = (d: Pick<Device, "status" | "jid">): boolean =>
  PAIRING_STATUSES.includes(d.status) && !isReconnecting(d);

interface DevicesState {
  items: Device[];
  loading: boolean;
  loaded: boolean;
  error: unknown;
  /** latest QR per device (from `qr_code` frames or GET /qr) */
  qr: Record<string, QrCode>;
  /** pairing codes from POST pair-phone */
  pairing: Record<string, string>;
  load: () => Promise<void>;
  upsert: (d: Device) => void;
  remove: (id: string) => void;
  setQr: (deviceId: string, qr: QrCode) => void;
  setPairing: (deviceId: string, code: string) => void;
  reset: () => void;
}

const initial = { items: [], loading: false, loaded: false, error: null, qr: {}, pairing: {} };

function byCreated(a: Device, b: Device): number {
  return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0;
}

function without<T>(rec: Record<string, T>, key: string): Record<string, T> {
  if (!(key in rec)) return rec;
  const next = { ...rec };
  delete next[key];
  return next;
}

export const useDevices = create<DevicesState>((set, get) => ({
  ...initial,

  load: async () => {
    set({ loading: true, error: null });
    try {
      const { items } = await devicesApi.list();
      set({ items: items.slice().sort(byCreated), loading: false, loaded: true });
      // forget QR/pairing state of devices that are no longer pairing
      for (const d of items) if (!PAIRING_STATUSES.includes(d.status)) get().upsert(d);
    } catch (error) {
      set({ loading: false, error });
    }
  },

  upsert: (d) => {
    const { items, qr, pairing } = get();
    const idx = items.findIndex((x) => x.id === d.id);
    const next = idx >= 0 ? items.map((x) => (x.id === d.id ? d : x)) : [...items, d].sort(byCreated);
    const pairingNow = PAIRING_STATUSES.includes(d.status);
    set({
      items: next,
      qr: pairingNow ? qr : without(qr, d.id),
      pairing: pairingNow ? pairing : without(pairing, d.id),
    });
  },

  remove: (id) => {
    const { items, qr, pairing } = get();
    set({ items: items.filter((d) => d.id !== id), qr: without(qr, id), pairing: without(pairing, id) });
  },

  setQr: (deviceId, code) => {
    const d = get().items.find((x) => x.id === deviceId);
    if (d?.status === "connected") return; // a late QR after the scan
    const patch: Partial<DevicesState> = { qr: { ...get().qr, [deviceId]: code } };
    // a QR means the device is waiting for a scan, whatever status we last saw
    if (d && d.status !== "qr_pending") {
      patch.items = get().items.map((x) => (x.id === deviceId ? { ...x, status: "qr_pending" } : x));
    }
    set(patch);
  },

  setPairing: (deviceId, code) => set({ pairing: { ...get().pairing, [deviceId]: code } }),

  reset: () => set({ ...initial }),
}));

onSessionEnd(() => useDevices.getState().reset());
