import { beforeEach, describe, expect, it, vi } from "vitest";
import { ApiError } from "../api/client";
import type { Chat, Message, Page } from "../api/types";
import { displayStatusOf } from "../lib/reconcile";

const api = vi.hoisted(() => ({
  send: vi.fn(),
  sendMedia: vi.fn(),
  list: vi.fn(),
  messages: vi.fn(),
  markRead: vi.fn(),
  get: vi.fn(),
  addNote: vi.fn(),
  update: vi.fn(),
}));

vi.mock("../api/endpoints", () => ({
  messagesApi: { send: api.send, sendMedia: api.sendMedia, media: vi.fn() },
  chatsApi: {
    list: api.list,
    messages: api.messages,
    markRead: api.markRead,
    get: api.get,
    addNote: api.addNote,
    update: api.update,
    counts: vi.fn().mockResolvedValue({ all: 0, mine: 0, unassigned: 0 }),
    labels: vi.fn().mockResolvedValue({ items: [] }),
  },
}));

const { useChats } = await import("./chats");
const { useAuth } = await import("./auth");
const { handleEvent } = await import("../ws");

function chat(id: string, at: string, extra: Partial<Chat> = {}): Chat {
  return {
    id,
    device_id: "d1",
    jid: `${id}@s.whatsapp.net`,
    name: `Chat ${id}`,
    phone: "34600000000",
    last_message_preview: "hola",
    last_message_at: at,
    unread_count: 0,
    lead_id: null,
    status: "open",
    assigned_to: null,
    labels: [],
    ...extra,
  };
}

function msg(extra: Partial<Message>): Message {
  return {
    id: "m-server",
    chat_id: "c1",
    device_id: "d1",
    wa_message_id: null,
    direction: "out",
    type: "text",
    body: "¡Hola! 👋",
    media: null,
    status: "pending",
    sender_jid: null,
    sender_name: null,
    sent_at: "2026-11-28T18:00:00Z",
    client_id: null,
    ...extra,
  };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const page = <T>(items: T[], next_cursor: string | null = null): Page<T> => ({ items, next_cursor });

async function openChat() {
  api.list.mockResolvedValueOnce(page([chat("c1", "2026-11-28T17:00:00Z"), chat("c2", "2026-11-28T16:00:00Z")]));
  await useChats.getState().loadChats();
  api.messages.mockResolvedValueOnce(page([]));
  await useChats.getState().loadThread("c1");
}

const thread = () => useChats.getState().threads.c1?.items ?? [];

beforeEach(() => {
  useChats.getState().reset();
  vi.clearAllMocks();
});

describe("optimistic send reconciliation", () => {
  it("frames before the HTTP answer: one message, status never regresses", async () => {
    await openChat();
    const http = deferred<Message>();
    api.send.mockReturnValueOnce(http.promise);
    const sending = useChats.getState().sendText("c1", "¡Hola! 👋");

    const [optimistic] = thread();
    expect(optimistic?.status).toBe("pending");
    const clientId = optimistic?.client_id as string;
    expect(api.send).toHaveBeenCalledWith({ chat_id: "c1", body: "¡Hola! 👋", client_id: clientId });

    const server = msg({ id: "m1", client_id: clientId });
    handleEvent({ type: "new_message", data: { message: server, chat: chat("c1", "2026-11-28T18:00:00Z") } });
    handleEvent({ type: "message_sent", data: { message: { ...server, status: "sent", wa_message_id: "WA1" } } });
    handleEvent({ type: "message_status", data: { message_id: "m1", chat_id: "c1", status: "delivered" } });
    http.resolve(server); // the 202 (status pending) lands last
    await sending;

    expect(thread()).toHaveLength(1);
    expect(thread()[0]).toMatchObject({ id: "m1", status: "delivered", wa_message_id: "WA1", client_id: clientId });
  });

  it("a status that arrives before its message is applied when the message shows up", async () => {
    await openChat();
    const http = deferred<Message>();
    api.send.mockReturnValueOnce(http.promise);
    const sending = useChats.getState().sendText("c1", "hola");
    const clientId = thread()[0]?.client_id as string;

    handleEvent({ type: "message_status", data: { message_id: "m9", chat_id: "c1", status: "read" } });
    http.resolve(msg({ id: "m9", client_id: clientId, body: "hola" }));
    await sending;
    handleEvent({ type: "message_sent", data: { message: msg({ id: "m9", client_id: clientId, status: "sent" }) } });

    expect(thread()).toHaveLength(1);
    expect(thread()[0]?.status).toBe("read");
  });

  it("a refused send shows as failed and a retry reuses the client_id", async () => {
    await openChat();
    api.send.mockRejectedValueOnce(new ApiError(409, "device_not_connected", "Device not connected"));
    await useChats.getState().sendText("c1", "hola");
    const failed = thread()[0];
    expect(failed && displayStatusOf(failed)).toBe("failed");

    api.send.mockResolvedValueOnce(msg({ id: "m2", client_id: failed?.client_id ?? null, body: "hola" }));
    await useChats.getState().retry("c1", failed?.id as string);
    expect(api.send).toHaveBeenLastCalledWith({ chat_id: "c1", body: "hola", client_id: failed?.client_id });
    expect(thread()).toHaveLength(1);
    expect(thread()[0]).toMatchObject({ id: "m2", status: "pending" });
    expect(displayStatusOf(thread()[0] as Message)).toBe("pending");
  });

  it("a server-side failure is shown, and a late delivered receipt wins over it", async () => {
    await openChat();
    handleEvent({ type: "new_message", data: { message: msg({ id: "m3", status: "sent" }), chat: chat("c1", "2026-11-28T18:00:00Z") } });
    handleEvent({ type: "message_status", data: { message_id: "m3", chat_id: "c1", status: "failed" } });
    expect(thread()[0]?.status).toBe("failed");
    handleEvent({ type: "message_status", data: { message_id: "m3", chat_id: "c1", status: "delivered" } });
    expect(thread()[0]?.status).toBe("delivered");
  });
});

describe("inbound and chat list", () => {
  it("a new message moves its chat to the top and redelivery changes nothing", async () => {
    await openChat();
    expect(useChats.getState().listIds).toEqual(["c1", "c2"]);
    const inbound = msg({ id: "m5", chat_id: "c2", direction: "in", status: "received", wa_message_id: "WA5", body: "Buenos días ☀️" });
    const c2 = chat("c2", "2026-11-28T19:00:00Z", { unread_count: 1, last_message_preview: "Buenos días ☀️" });
    handleEvent({ type: "new_message", data: { message: inbound, chat: c2 } });
    expect(useChats.getState().listIds).toEqual(["c2", "c1"]);
    expect(useChats.getState().byId.c2?.unread_count).toBe(1);

    // the same WhatsApp message seen twice in an open thread stays one bubble
    api.messages.mockResolvedValueOnce(page([inbound]));
    await useChats.getState().loadThread("c2");
    handleEvent({ type: "new_message", data: { message: inbound, chat: c2 } });
    expect(useChats.getState().threads.c2?.items).toHaveLength(1);
  });

  it("a brand-new chat is inserted in order; chat_read clears the badge", async () => {
    await openChat();
    const c3 = chat("c3", "2026-11-28T16:30:00Z", { unread_count: 2 });
    handleEvent({ type: "new_message", data: { message: msg({ id: "m6", chat_id: "c3", direction: "in" }), chat: c3 } });
    expect(useChats.getState().listIds).toEqual(["c1", "c3", "c2"]);
    handleEvent({ type: "chat_read", data: { chat_id: "c3" } });
    expect(useChats.getState().byId.c3?.unread_count).toBe(0);
  });

  it("a chat that does not match the search is not added to the list", async () => {
    api.list.mockResolvedValueOnce(page([chat("c1", "2026-11-28T17:00:00Z", { name: "María José" })]));
    await useChats.getState().setFilters({ q: "maría" });
    handleEvent({ type: "new_message", data: { message: msg({ id: "m7", chat_id: "c9" }), chat: chat("c9", "2026-11-28T20:00:00Z", { name: "Pedro" }) } });
    expect(useChats.getState().listIds).toEqual(["c1"]);
    expect(useChats.getState().byId.c9).toBeDefined();
  });

  it("paging older messages keeps order and drops duplicates", async () => {
    api.list.mockResolvedValueOnce(page([chat("c1", "2026-11-28T17:00:00Z")]));
    await useChats.getState().loadChats();
    const at = (m: number) => `2026-11-28T10:${String(m).padStart(2, "0")}:00Z`;
    api.messages.mockResolvedValueOnce(page([msg({ id: "b", sent_at: at(2) }), msg({ id: "a", sent_at: at(1) })], "cur1"));
    await useChats.getState().loadThread("c1");
    api.messages.mockResolvedValueOnce(page([msg({ id: "a", sent_at: at(1) }), msg({ id: "z", sent_at: at(0) })], null));
    await useChats.getState().loadOlder("c1");
    expect(thread().map((m) => m.id)).toEqual(["z", "a", "b"]);
    expect(useChats.getState().threads.c1?.cursor).toBeNull();
    expect(api.messages).toHaveBeenLastCalledWith("c1", { limit: 50, cursor: "cur1" });
  });

  it("marking read zeroes the badge at once and calls the API", async () => {
    api.list.mockResolvedValueOnce(page([chat("c1", "2026-11-28T17:00:00Z", { unread_count: 3 })]));
    await useChats.getState().loadChats();
    api.markRead.mockResolvedValueOnce(undefined);
    await useChats.getState().markRead("c1");
    expect(useChats.getState().byId.c1?.unread_count).toBe(0);
    expect(api.markRead).toHaveBeenCalledWith("c1");
  });
});

describe("issue 11: media in two phases, one chat per person", () => {
  const media = (status: "ready" | "pending" | "failed" | "too_large") => ({
    url: "/api/media/m5",
    mime_type: "image/png",
    file_name: "foto.png",
    size: 4,
    status,
    error: status === "failed" ? "timed out" : null,
  });

  it("message_updated moves the media forward and a stale copy never undoes ready", async () => {
    await openChat();
    const inbound = msg({ id: "m5", direction: "in", status: "received", type: "image", media: media("pending") });
    handleEvent({ type: "new_message", data: { message: inbound, chat: chat("c1", "2026-11-28T18:00:00Z") } });
    expect(thread()[0]?.media?.status).toBe("pending");
    handleEvent({ type: "message_updated", data: { message: { ...inbound, media: media("failed") } } });
    expect(thread()[0]?.media).toMatchObject({ status: "failed", error: "timed out" });
    handleEvent({ type: "message_updated", data: { message: { ...inbound, media: media("pending") } } });
    expect(thread()[0]?.media?.status).toBe("pending"); // a retry
    handleEvent({ type: "message_updated", data: { message: { ...inbound, media: media("ready") } } });
    handleEvent({ type: "message_updated", data: { message: { ...inbound, media: media("pending") } } });
    expect(thread()).toHaveLength(1);
    expect(thread()[0]?.media?.status).toBe("ready");
  });

  it("a chat opened by LID is folded into the phone chat that now knows the LID", async () => {
    await openChat();
    const lid = "70001112223334@lid";
    useChats.getState().upsertChat(chat("lidchat", "2026-11-28T18:00:00Z", { jid: lid, lid, phone: null }));
    expect(useChats.getState().listIds).toContain("lidchat");
    useChats.getState().upsertChat(chat("phonechat", "2026-11-28T18:05:00Z", { lid, unread_count: 2 }));
    const state = useChats.getState();
    expect(state.listIds).toContain("phonechat");
    expect(state.listIds).not.toContain("lidchat");
    expect(state.byId.lidchat).toBeUndefined();
    expect(state.mergedInto).toEqual({ lidchat: "phonechat" });
    // chats of other devices with the same LID are other people's chats
    useChats.getState().upsertChat(chat("elsewhere", "2026-11-28T18:06:00Z", { device_id: "d2", jid: lid, lid }));
    expect(useChats.getState().listIds).toContain("phonechat");
  });
});

describe("conversations", () => {
  it("a chat resolved elsewhere leaves the open list; an inbound message brings it back", async () => {
    await openChat();
    expect(useChats.getState().filters.status).toBe("open");
    handleEvent({ type: "chat_updated", data: { chat: chat("c1", "2026-11-28T17:00:00Z", { status: "resolved" }) } });
    expect(useChats.getState().listIds).toEqual(["c2"]);
    handleEvent({
      type: "new_message",
      data: { message: msg({ id: "in1", direction: "in", status: "received" }), chat: chat("c1", "2026-11-28T19:00:00Z") },
    });
    expect(useChats.getState().listIds).toEqual(["c1", "c2"]);
  });

  it("the Mine tab asks for assigned_to=me and only takes in chats assigned to me", async () => {
    useAuth.setState({ user: { id: "u-me", account_id: "a", email: "a@x", name: "Ana", role: "agent" } });
    api.list.mockResolvedValueOnce(page([chat("c1", "2026-11-28T17:00:00Z", { assigned_to: "u-me" })]));
    await useChats.getState().setFilters({ tab: "mine", label: "vip" });
    expect(api.list).toHaveBeenLastCalledWith(
      expect.objectContaining({ assigned_to: "me", status: "open", label: "vip" }),
    );
    const other = chat("c2", "2026-11-28T18:00:00Z", { assigned_to: "u-other", labels: ["vip"] });
    handleEvent({ type: "new_message", data: { message: msg({ chat_id: "c2", direction: "in" }), chat: other } });
    expect(useChats.getState().listIds).toEqual(["c1"]);
    handleEvent({ type: "chat_updated", data: { chat: { ...other, assigned_to: "u-me" } } });
    expect(useChats.getState().listIds).toEqual(["c2", "c1"]);
    useAuth.setState({ user: null });
  });

  it("a note goes to the notes endpoint and leaves the inbox preview alone", async () => {
    await openChat();
    api.addNote.mockImplementationOnce(async (_id: string, body: { body: string; client_id: string }) =>
      msg({ id: "n1", direction: "note", status: "sent", body: body.body, client_id: body.client_id }),
    );
    await useChats.getState().sendNote("c1", "Cliente VIP");
    expect(api.send).not.toHaveBeenCalled();
    expect(api.addNote).toHaveBeenCalledWith("c1", expect.objectContaining({ body: "Cliente VIP" }));
    expect(thread()).toHaveLength(1);
    expect(thread()[0]).toMatchObject({ id: "n1", direction: "note" });
    expect(useChats.getState().byId.c1?.last_message_preview).toBe("hola");
  });

  it("a refused change is undone", async () => {
    await openChat();
    api.update.mockRejectedValueOnce(new ApiError(422, "validation_error", "Validation failed"));
    await expect(useChats.getState().updateChat("c1", { status: "resolved" })).rejects.toThrow();
    expect(useChats.getState().byId.c1?.status).toBe("open");
    expect(useChats.getState().listIds).toEqual(["c1", "c2"]);
  });
});
