// One WebSocket per session: reconnects with exponential backoff (fresh token
// each time; close code 4401 → refresh first), pings every 25 s, and feeds the stores.
import { create } from "zustand";
import { ApiError, freshAccessToken, refreshSession, tokens } from "./api/client";
import type { WsEvent } from "./api/types";
import { onSessionEnd } from "./lib/bus";
import { useChats } from "./stores/chats";
import { useDevices } from "./stores/devices";
import { useLeads } from "./stores/leads";

export type WsStatus = "idle" | "connecting" | "open" | "closed";

export const useWsStatus = create<{ status: WsStatus }>(() => ({ status: "idle" }));

/** Apply one server frame to the stores. */
export function handleEvent(evt: WsEvent): void {
  switch (evt.type) {
    case "new_message": {
      const { message, chat } = evt.data;
      const chats = useChats.getState();
      if (chat) chats.upsertChat(chat);
      if (message) chats.upsertMessage(message);
      if (message?.direction === "in") {
        chats.scheduleCounts();
        chats.setPresence(message.chat_id, "paused"); // the contact stopped typing: it arrived
      }
      break;
    }
    case "message_sent":
    case "message_updated":
      useChats.getState().upsertMessage(evt.data.message);
      break;
    case "message_status":
      useChats.getState().setStatus(evt.data.message_id, evt.data.chat_id, evt.data.status);
      break;
    case "chat_read":
      useChats.getState().patchChat(evt.data.chat_id, { unread_count: 0 });
      useChats.getState().scheduleCounts();
      break;
    case "chat_updated": {
      const chats = useChats.getState();
      chats.upsertChat(evt.data.chat);
      chats.scheduleCounts();
      const known = new Set(chats.labels);
      if (evt.data.chat.labels?.some((l) => !known.has(l))) void chats.loadLabels();
      break;
    }
    case "device_status":
      useDevices.getState().upsert(evt.data.device);
      break;
    case "qr_code":
      useDevices.getState().setQr(evt.data.device_id, { code: evt.data.code, expires_at: evt.data.expires_at });
      break;
    case "lead_created":
    case "lead_updated": {
      const lead = evt.data.lead;
      useLeads.getState().upsert(lead);
      // a lead created from a chat's first message: link it to the chat we show
      if (lead.chat_id) {
        const chat = useChats.getState().byId[lead.chat_id];
        if (chat && chat.lead_id !== lead.id) useChats.getState().patchChat(chat.id, { lead_id: lead.id });
      }
      break;
    }
    case "lead_deleted":
      useLeads.getState().forget(evt.data.lead_id);
      break;
    case "presence":
      useChats.getState().setPresence(evt.data.chat_id, evt.data.state);
      break;
    case "history_importing":
      useChats.getState().setImporting(evt.data.device_id, true);
      break;
    case "history_synced": {
      const chats = useChats.getState();
      chats.setImporting(evt.data.device_id, false);
      // the imported chats came without new_message frames: list them now
      if (chats.loaded) void chats.loadChats({ soft: true });
      break;
    }
    default:
      break;
  }
}

/** After a reconnect, fetch what may have been missed while the socket was down. */
export function resync(activeChatId: string | null): void {
  const devices = useDevices.getState();
  if (devices.loaded) void devices.load();
  const chats = useChats.getState();
  if (chats.loaded) void chats.loadChats({ soft: true });
  if (chats.counts) void chats.loadCounts();
  if (activeChatId && chats.threads[activeChatId]?.loaded) void chats.loadThread(activeChatId);
  const leads = useLeads.getState();
  if (leads.loaded) void leads.load({ soft: true });
}

export const PING_MS = 25_000;
const MAX_BACKOFF_MS = 30_000;

export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt);
  return Math.round(base / 2 + random() * (base / 2));
}

export function socketUrl(token: string, loc: Pick<Location, "protocol" | "host"> = location): string {
  const proto = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${loc.host}/ws?token=${encodeURIComponent(token)}`;
}

class Live {
  private ws: WebSocket | null = null;
  private running = false;
  private attempt = 0;
  private everOpened = false;
  private ping: ReturnType<typeof setInterval> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private last4401 = 0;
  activeChatId: string | null = null;

  start(): void {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.everOpened = false;
    window.addEventListener("online", this.onOnline);
    void this.open();
  }

  stop(): void {
    this.running = false;
    window.removeEventListener("online", this.onOnline);
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.onerror = null;
      ws.onopen = null;
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
    }
    useWsStatus.setState({ status: "idle" });
  }

  private onOnline = () => {
    if (this.running && (!this.ws || this.ws.readyState !== WebSocket.OPEN)) {
      this.clearTimers();
      void this.open();
    }
  };

  private clearTimers(): void {
    if (this.ping) clearInterval(this.ping);
    if (this.timer) clearTimeout(this.timer);
    this.ping = null;
    this.timer = null;
  }

  private async open(): Promise<void> {
    if (!this.running) return;
    useWsStatus.setState({ status: "connecting" });
    let token: string;
    try {
      token = await freshAccessToken();
    } catch (e) {
      // a failed refresh (401) has already sent the app to login
      if (e instanceof ApiError && e.status === 401) return;
      this.schedule();
      return;
    }
    if (!this.running) return;
    const ws = new WebSocket(socketUrl(token));
    this.ws = ws;
    ws.onopen = () => {
      const reconnect = this.everOpened;
      this.attempt = 0;
      this.everOpened = true;
      useWsStatus.setState({ status: "open" });
      this.ping = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      }, PING_MS);
      if (reconnect) resync(this.activeChatId);
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== "string") return;
      try {
        handleEvent(JSON.parse(ev.data) as WsEvent);
      } catch (e) {
        console.warn("clarin: bad frame", e);
      }
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearTimers();
      if (!this.running) return;
      useWsStatus.setState({ status: "closed" });
      if (ev.code === 4401) {
        // expired or revoked token: refresh, then reconnect (right away the first time)
        const repeated = Date.now() - this.last4401 < 10_000;
        this.last4401 = Date.now();
        refreshSession(token).then(
          () => (repeated ? this.schedule() : void this.open()),
          (e: unknown) => {
            if (!(e instanceof ApiError && e.status === 401)) this.schedule();
          },
        );
        return;
      }
      this.schedule();
    };
  }

  private schedule(): void {
    if (!this.running || !tokens.refresh) return;
    useWsStatus.setState({ status: "closed" });
    const delay = backoffDelay(this.attempt++);
    this.timer = setTimeout(() => void this.open(), delay);
  }
}

export const live = new Live();

onSessionEnd(() => live.stop());
