// Types mirroring the public contract (docs/API.md).

export type Role = "admin" | "agent";

export interface User {
  id: string;
  account_id: string;
  email: string;
  name: string;
  role: Role;
  disabled?: boolean;
}

export interface Account {
  id: string;
  name: string;
}

export interface Session {
  access_token: string;
  refresh_token: string;
  token_type: "bearer";
  expires_in: number;
  user: User;
  account: Account;
}

export type DeviceStatus =
  | "disconnected"
  | "connecting"
  | "qr_pending"
  | "connected"
  | "logged_out"
  | "error";

export interface Device {
  id: string;
  account_id: string;
  name: string;
  phone: string | null;
  jid: string | null;
  status: DeviceStatus;
  last_error: string | null;
  last_seen_at: string | null;
  created_at: string;
}

export interface QrCode {
  code: string;
  expires_at: string;
}

export interface Chat {
  id: string;
  device_id: string;
  jid: string;
  name: string | null;
  phone: string | null;
  last_message_preview: string | null;
  last_message_at: string | null;
  unread_count: number;
  lead_id: string | null;
  /** the contact's LID JID (…@lid) when WhatsApp told it */
  lid?: string | null;
  /** the chat as a conversation the team works */
  status: ChatStatus;
  assigned_to: string | null;
  labels: string[];
}

export type ChatStatus = "open" | "pending" | "resolved";

/** inbound, outbound, or an agent's private note (never sent to WhatsApp) */
export type MessageDirection = "in" | "out" | "note";
export type MessageType =
  | "text"
  | "image"
  | "video"
  | "audio"
  | "document"
  | "sticker"
  | "location"
  | "contact"
  | "reaction"
  | "unknown";
export type MessageStatus = "pending" | "sent" | "delivered" | "read" | "failed" | "received";

/** `pending` while the file is fetched from WhatsApp; `failed` may be retried. */
export type MediaStatus = "ready" | "pending" | "failed" | "too_large";

export interface Media {
  url: string;
  mime_type: string | null;
  file_name: string | null;
  size: number | null;
  status?: MediaStatus;
  error?: string | null;
}

export interface Message {
  id: string;
  chat_id: string;
  device_id: string;
  wa_message_id: string | null;
  direction: MessageDirection;
  type: MessageType;
  body: string | null;
  media: Media | null;
  status: MessageStatus;
  sender_jid: string | null;
  sender_name: string | null;
  sent_at: string;
  client_id: string | null;
  /** who wrote a note */
  author_id?: string | null;
  /** the message this one answers (same chat), when stored */
  reply_to?: string | null;
  /** what a reply shows above itself */
  quoted?: QuotedMessage | null;
  reactions?: Reaction[];
  edited_at?: string | null;
  /** deleted for everyone: body and media are gone */
  deleted?: boolean;
}

export interface Reaction {
  emoji: string;
  sender_jid: string | null;
  from_me: boolean;
}

export interface QuotedMessage {
  message_id: string | null;
  wa_message_id: string | null;
  type: MessageType;
  body: string | null;
  sender_jid: string | null;
  from_me: boolean;
  deleted: boolean;
}

export type PresenceState = "composing" | "paused" | "available" | "unavailable";

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Lead {
  id: string;
  account_id: string;
  name: string;
  phone: string | null;
  email: string | null;
  company: string | null;
  stage: string;
  tags: string[];
  notes: string | null;
  value: number | string | null;
  assigned_to: string | null;
  source: "manual" | "whatsapp";
  chat_id: string | null;
  last_contact_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface LeadInput {
  name?: string;
  phone?: string | null;
  email?: string | null;
  company?: string | null;
  stage?: string;
  tags?: string[];
  notes?: string | null;
  value?: number | null;
  assigned_to?: string | null;
}

export interface Stage {
  key: string;
  name: string;
  position: number;
}

export interface QuickReply {
  id: string;
  shortcut: string;
  body: string;
  created_at: string;
}

export interface SearchHit {
  message: Message;
  chat: Chat;
}

/** chats with something unread in each inbox tab */
export interface UnreadCounts {
  all: number;
  mine: number;
  unassigned: number;
}

export interface ValidationDetail {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export interface ErrorBody {
  error: { code: string; message: string; details: unknown };
}

// ---- WebSocket frames ----
export type WsEvent =
  | { type: "new_message"; data: { message: Message; chat: Chat } }
  | { type: "message_sent"; data: { message: Message } }
  | { type: "message_status"; data: { message_id: string; chat_id: string; status: MessageStatus } }
  | { type: "message_updated"; data: { message: Message } }
  | { type: "device_status"; data: { device: Device } }
  | { type: "qr_code"; data: { device_id: string; code: string; expires_at: string } }
  | { type: "chat_read"; data: { chat_id: string } }
  | { type: "chat_updated"; data: { chat: Chat } }
  | { type: "lead_created"; data: { lead: Lead } }
  | { type: "lead_updated"; data: { lead: Lead } }
  | { type: "lead_deleted"; data: { lead_id: string } }
  | { type: "presence"; data: { chat_id: string; state: PresenceState } }
  | { type: "history_importing"; data: { device_id: string } }
  | { type: "history_synced"; data: { device_id: string; chats: number; messages: number } }
  | { type: "pong"; data?: unknown };

// ---- webhooks (admin) ----
export interface Webhook {
  id: string;
  url: string;
  events: string[];
  active: boolean;
  created_at: string;
}

export interface WebhookCreated extends Webhook {
  secret: string;
}

export type DeliveryStatus = "pending" | "sending" | "delivered" | "failed";

export interface WebhookDelivery {
  id: string;
  webhook_id: string;
  event_id: string;
  event_type: string;
  status: DeliveryStatus;
  status_code: number | null;
  attempt: number;
  error: string | null;
  created_at: string;
  delivered_at: string | null;
  next_attempt_at: string | null;
}
