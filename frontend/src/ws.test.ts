import { beforeEach, describe, expect, it, vi } from "vitest";
import type { Chat, Device, Lead } from "./api/types";

vi.mock("./api/endpoints", () => ({
  chatsApi: { list: vi.fn(), messages: vi.fn(), markRead: vi.fn(), get: vi.fn() },
  messagesApi: { send: vi.fn(), sendMedia: vi.fn(), media: vi.fn() },
  devicesApi: { list: vi.fn() },
  leadsApi: { list: vi.fn(), get: vi.fn(), update: vi.fn(), stages: vi.fn() },
}));

const { backoffDelay, handleEvent, socketUrl } = await import("./ws");
const { useDevices } = await import("./stores/devices");
const { useLeads } = await import("./stores/leads");
const { useChats } = await import("./stores/chats");

const device = (status: Device["status"]): Device => ({
  id: "d1",
  account_id: "a1",
  name: "Ventas",
  phone: null,
  jid: null,
  status,
  last_error: null,
  last_seen_at: null,
  created_at: "2026-11-28T10:00:00Z",
});

const lead = (extra: Partial<Lead> = {}): Lead => ({
  id: "l1",
  account_id: "a1",
  name: "José Ñandú 🚀",
  phone: "34600111222",
  email: null,
  company: null,
  stage: "new",
  tags: ["vip"],
  notes: null,
  value: null,
  assigned_to: null,
  source: "whatsapp",
  chat_id: "c1",
  last_contact_at: null,
  created_at: "2026-11-28T10:00:00Z",
  updated_at: "2026-11-28T10:00:00Z",
  ...extra,
});

beforeEach(() => {
  useDevices.getState().reset();
  useLeads.getState().reset();
  useChats.getState().reset();
});

describe("device frames", () => {
  it("QR codes rotate while pairing and are dropped once connected", () => {
    useDevices.getState().upsert(device("disconnected"));
    handleEvent({ type: "device_status", data: { device: device("qr_pending") } });
    handleEvent({ type: "qr_code", data: { device_id: "d1", code: "QR-1", expires_at: "2026-11-28T10:00:20Z" } });
    handleEvent({ type: "qr_code", data: { device_id: "d1", code: "QR-2", expires_at: "2026-11-28T10:00:40Z" } });
    expect(useDevices.getState().qr.d1?.code).toBe("QR-2");
    handleEvent({ type: "device_status", data: { device: { ...device("connected"), phone: "34600111222" } } });
    expect(useDevices.getState().items[0]?.status).toBe("connected");
    expect(useDevices.getState().qr.d1).toBeUndefined();
    // a late QR after the scan is ignored
    handleEvent({ type: "qr_code", data: { device_id: "d1", code: "QR-3", expires_at: "2026-11-28T10:01:00Z" } });
    expect(useDevices.getState().qr.d1).toBeUndefined();
  });

  it("a QR before its status frame puts the device in qr_pending", () => {
    useDevices.getState().upsert(device("connecting"));
    handleEvent({ type: "qr_code", data: { device_id: "d1", code: "QR-1", expires_at: "2026-11-28T10:00:20Z" } });
    expect(useDevices.getState().items[0]?.status).toBe("qr_pending");
  });
});

describe("lead frames", () => {
  it("creates, moves and deletes leads live, and links the lead to its chat", () => {
    useLeads.setState({ loaded: true });
    const c: Chat = {
      id: "c1",
      device_id: "d1",
      jid: "34600111222@s.whatsapp.net",
      name: "José",
      phone: "34600111222",
      last_message_preview: "hola",
      last_message_at: "2026-11-28T10:00:00Z",
      unread_count: 1,
      lead_id: null,
      status: "open",
      assigned_to: null,
      labels: [],
    };
    useChats.getState().upsertChat(c);
    handleEvent({ type: "lead_created", data: { lead: lead() } });
    expect(useLeads.getState().items.map((l) => l.id)).toEqual(["l1"]);
    expect(useChats.getState().byId.c1?.lead_id).toBe("l1");

    handleEvent({ type: "lead_updated", data: { lead: lead({ stage: "qualified", updated_at: "2026-11-28T11:00:00Z" }) } });
    expect(useLeads.getState().byId.l1?.stage).toBe("qualified");
    // an older update arriving late does not undo it
    handleEvent({ type: "lead_updated", data: { lead: lead({ stage: "contacted", updated_at: "2026-11-28T10:30:00Z" }) } });
    expect(useLeads.getState().byId.l1?.stage).toBe("qualified");

    handleEvent({ type: "lead_deleted", data: { lead_id: "l1" } });
    expect(useLeads.getState().items).toHaveLength(0);
  });

  it("a lead that does not match the table filters stays out of the list", async () => {
    useLeads.setState({ loaded: true, filters: { q: "", stage: "won", tag: "" }, view: "table" });
    handleEvent({ type: "lead_created", data: { lead: lead() } });
    expect(useLeads.getState().items).toHaveLength(0);
    expect(useLeads.getState().byId.l1).toBeDefined();
  });
});

describe("connection helpers", () => {
  it("backs off exponentially with jitter, capped at 30 s", () => {
    expect(backoffDelay(0, () => 0)).toBe(250);
    expect(backoffDelay(0, () => 1)).toBe(500);
    expect(backoffDelay(3, () => 1)).toBe(4000);
    expect(backoffDelay(20, () => 1)).toBe(30000);
  });

  it("uses wss on https and the same origin", () => {
    expect(socketUrl("a b", { protocol: "https:", host: "crm.example.com" })).toBe("wss://crm.example.com/ws?token=a%20b");
    expect(socketUrl("t", { protocol: "http:", host: "localhost:8080" })).toBe("ws://localhost:8080/ws?token=t");
  });
});

describe("the whole conversation frames", () => {
  beforeEach(() => useChats.getState().reset());

  it("shows a contact typing until they stop or their message arrives", () => {
    handleEvent({ type: "presence", data: { chat_id: "c7", state: "composing" } });
    expect(useChats.getState().typing.c7).toBeGreaterThan(Date.now());
    handleEvent({ type: "presence", data: { chat_id: "c7", state: "paused" } });
    expect(useChats.getState().typing.c7).toBeUndefined();
    handleEvent({ type: "presence", data: { chat_id: "c7", state: "composing" } });
    handleEvent({
      type: "new_message",
      data: {
        message: {
          id: "m1", chat_id: "c7", device_id: "d1", wa_message_id: "W1", direction: "in", type: "text",
          body: "hola", media: null, status: "received", sender_jid: null, sender_name: null,
          sent_at: "2026-11-28T18:00:00Z", client_id: null,
        },
        chat: undefined as unknown as Chat,
      },
    });
    expect(useChats.getState().typing.c7).toBeUndefined();
  });

  it("marks a device importing history until it is synced", () => {
    handleEvent({ type: "history_importing", data: { device_id: "d1" } });
    expect(useChats.getState().importing.d1).toBe(true);
    handleEvent({ type: "history_synced", data: { device_id: "d1", chats: 5, messages: 1000 } });
    expect(useChats.getState().importing.d1).toBe(false);
  });
});
