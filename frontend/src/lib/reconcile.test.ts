import { describe, expect, it } from "vitest";
import type { Message, MessageStatus } from "../api/types";
import { TEMP_PREFIX, chatOrder, mergeStatus, upsertInto, type UiMessage } from "./reconcile";

const base: Message = {
  id: "m1",
  chat_id: "c1",
  device_id: "d1",
  wa_message_id: null,
  direction: "out",
  type: "text",
  body: "hola",
  media: null,
  status: "pending",
  sender_jid: null,
  sender_name: null,
  sent_at: "2026-11-28T18:00:00Z",
  client_id: null,
};

describe("mergeStatus", () => {
  const cases: [MessageStatus, MessageStatus, MessageStatus][] = [
    ["pending", "sent", "sent"],
    ["sent", "pending", "sent"],
    ["delivered", "sent", "delivered"],
    ["read", "delivered", "read"],
    ["pending", "failed", "failed"],
    ["sent", "failed", "failed"],
    ["failed", "sent", "failed"],
    ["failed", "delivered", "delivered"],
    ["read", "failed", "read"],
    ["received", "read", "read"],
  ];
  it.each(cases)("%s + %s → %s", (a, b, want) => {
    expect(mergeStatus(a, b)).toBe(want);
  });
});

describe("upsertInto", () => {
  it("replaces the optimistic copy with the server's, keeping the preview", () => {
    const temp: UiMessage = { ...base, id: `${TEMP_PREFIX}k1`, client_id: "k1", local: { preview: "blob:x", error: "network" } };
    const list = upsertInto([], temp);
    const next = upsertInto(list, { ...base, id: "srv", client_id: "k1", status: "sent", sent_at: "2026-11-28T18:00:01Z" });
    expect(next).toHaveLength(1);
    expect(next[0]).toMatchObject({ id: "srv", status: "sent", local: { preview: "blob:x" } });
    expect(next[0]?.local?.error).toBeUndefined();
  });

  it("the server copy wins even when the optimistic one comes second", () => {
    const server: UiMessage = { ...base, id: "srv", client_id: "k1", status: "delivered", sent_at: "2026-11-28T18:00:05Z" };
    const temp: UiMessage = { ...base, id: `${TEMP_PREFIX}k1`, client_id: "k1", sent_at: "2026-11-28T18:00:00Z", local: {} };
    const [m] = upsertInto([server], temp);
    expect(m).toMatchObject({ id: "srv", status: "delivered", sent_at: "2026-11-28T18:00:05Z" });
  });

  it("dedupes by wa_message_id on the same device and keeps time order", () => {
    const a: UiMessage = { ...base, id: "a", wa_message_id: "W1", sent_at: "2026-11-28T18:00:00Z" };
    const b: UiMessage = { ...base, id: "b", sent_at: "2026-11-28T17:00:00Z" };
    let list = upsertInto(upsertInto([], a), b);
    expect(list.map((m) => m.id)).toEqual(["b", "a"]);
    list = upsertInto(list, { ...a, status: "read" });
    expect(list).toHaveLength(2);
    expect(list[1]?.status).toBe("read");
    // same wa_message_id on another device is another message
    expect(upsertInto(list, { ...a, id: "x", device_id: "d2" })).toHaveLength(3);
  });
});

describe("chatOrder", () => {
  it("sorts newest first with empty chats last", () => {
    const mk = (id: string, at: string | null) => ({
      id,
      device_id: "d",
      jid: "j",
      name: null,
      phone: null,
      last_message_preview: null,
      last_message_at: at,
      unread_count: 0,
      lead_id: null,
      status: "open" as const,
      assigned_to: null,
      labels: [],
    });
    const sorted = [mk("old", "2026-01-01T00:00:00Z"), mk("none", null), mk("new", "2026-06-01T00:00:00Z")].sort(chatOrder);
    expect(sorted.map((c) => c.id)).toEqual(["new", "old", "none"]);
  });
});

describe("a message deleted for everyone", () => {
  it("loses its text and file even when an older copy had them", () => {
    const stored: UiMessage = {
      ...base,
      id: "m9",
      status: "sent",
      body: "foto",
      media: { url: "/api/media/m9", mime_type: "image/png", file_name: "a.png", size: 3, status: "ready" },
    };
    const gone: UiMessage = { ...stored, body: null, media: null, deleted: true };
    const [merged] = upsertInto([stored], gone);
    expect(merged?.deleted).toBe(true);
    expect(merged?.body).toBeNull();
    expect(merged?.media).toBeNull();
  });

  it("keeps an edit's new text and time", () => {
    const stored: UiMessage = { ...base, id: "m8", status: "sent" };
    const edited: UiMessage = { ...stored, body: "hola de nuevo", edited_at: "2026-11-28T18:01:00Z" };
    const [merged] = upsertInto([stored], edited);
    expect(merged?.body).toBe("hola de nuevo");
    expect(merged?.edited_at).toBe("2026-11-28T18:01:00Z");
  });
});
