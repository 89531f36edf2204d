import { request } from "./client";
import type {
  Account,
  Chat,
  ChatStatus,
  Device,
  Lead,
  LeadInput,
  Message,
  Page,
  QrCode,
  QuickReply,
  Role,
  SearchHit,
  Session,
  Stage,
  UnreadCounts,
  User,
  Webhook,
  WebhookCreated,
  WebhookDelivery,
} from "./types";

const enc = encodeURIComponent;

export const authApi = {
  login: (email: string, password: string) =>
    request<Session>("/api/auth/login", { method: "POST", json: { email, password }, auth: false }),
  register: (body: { account_name: string; name: string; email: string; password: string }) =>
    request<Session>("/api/auth/register", { method: "POST", json: body, auth: false }),
  logout: (refresh_token: string) =>
    request<void>("/api/auth/logout", { method: "POST", json: { refresh_token }, auth: false }),
  me: () => request<{ user: User; account: Account }>("/api/auth/me"),
};

export const usersApi = {
  list: () => request<{ items: User[] }>("/api/users"),
  create: (body: { name: string; email: string; password: string; role: Role }) =>
    request<User>("/api/users", { method: "POST", json: body }),
  update: (id: string, body: { name?: string; role?: Role; disabled?: boolean }) =>
    request<User>(`/api/users/${enc(id)}`, { method: "PATCH", json: body }),
  remove: (id: string) => request<void>(`/api/users/${enc(id)}`, { method: "DELETE" }),
  changePassword: (current_password: string, new_password: string) =>
    request<void>("/api/auth/password", { method: "POST", json: { current_password, new_password } }),
};

export const devicesApi = {
  list: () => request<{ items: Device[] }>("/api/devices"),
  create: (name: string) => request<Device>("/api/devices", { method: "POST", json: { name } }),
  get: (id: string) => request<Device>(`/api/devices/${enc(id)}`),
  connect: (id: string) => request<Device>(`/api/devices/${enc(id)}/connect`, { method: "POST" }),
  qr: (id: string) => request<QrCode>(`/api/devices/${enc(id)}/qr`),
  pairPhone: (id: string, phone: string) =>
    request<{ pairing_code: string }>(`/api/devices/${enc(id)}/pair-phone`, { method: "POST", json: { phone } }),
  disconnect: (id: string) => request<Device>(`/api/devices/${enc(id)}/disconnect`, { method: "POST" }),
  logout: (id: string) => request<Device>(`/api/devices/${enc(id)}/logout`, { method: "POST" }),
  remove: (id: string) => request<void>(`/api/devices/${enc(id)}`, { method: "DELETE" }),
};

export interface ChatListParams {
  device_id?: string;
  q?: string;
  unread?: boolean;
  status?: ChatStatus | "";
  /** "me", "none" or a user id */
  assigned_to?: string;
  label?: string;
  limit?: number;
  cursor?: string | null;
}

export const chatsApi = {
  list: (params: ChatListParams) =>
    request<Page<Chat>>("/api/chats", {
      query: { ...params, unread: params.unread ? "true" : undefined },
    }),
  get: (id: string) => request<Chat>(`/api/chats/${enc(id)}`),
  update: (id: string, body: { status?: ChatStatus; assigned_to?: string | null; labels?: string[] }) =>
    request<Chat>(`/api/chats/${enc(id)}`, { method: "PATCH", json: body }),
  addNote: (id: string, body: { body: string; client_id: string }) =>
    request<Message>(`/api/chats/${enc(id)}/notes`, { method: "POST", json: body }),
  counts: (params: { device_id?: string; status?: ChatStatus | "" }) =>
    request<UnreadCounts>("/api/chats/counts", { query: params }),
  labels: () => request<{ items: { label: string; chats: number }[] }>("/api/chats/labels"),
  messages: (id: string, params: { limit?: number; cursor?: string | null }) =>
    request<Page<Message>>(`/api/chats/${enc(id)}/messages`, { query: params }),
  markRead: (id: string) => request<void>(`/api/chats/${enc(id)}/read`, { method: "POST" }),
};

export const messagesApi = {
  send: (body: { chat_id: string; body: string; client_id: string; reply_to?: string }) =>
    request<Message>("/api/messages/send", { method: "POST", json: body }),
  sendMedia: (p: { chat_id: string; file: File; caption?: string; client_id: string; reply_to?: string }) => {
    const form = new FormData();
    form.set("chat_id", p.chat_id);
    form.set("client_id", p.client_id);
    if (p.reply_to) form.set("reply_to", p.reply_to);
    if (p.caption) form.set("caption", p.caption);
    form.set("file", p.file, p.file.name);
    return request<Message>("/api/messages/send/media", { method: "POST", form });
  },
  media: (messageId: string) => request<Blob>(`/api/media/${enc(messageId)}`, { as: "blob" }),
  retryMedia: (messageId: string) => request<Message>(`/api/media/${enc(messageId)}/retry`, { method: "POST" }),
  /** "" removes our reaction */
  react: (messageId: string, emoji: string) =>
    request<Message>(`/api/messages/${enc(messageId)}/react`, { method: "POST", json: { emoji } }),
  edit: (messageId: string, body: string) =>
    request<Message>(`/api/messages/${enc(messageId)}`, { method: "PATCH", json: { body } }),
  revoke: (messageId: string) => request<Message>(`/api/messages/${enc(messageId)}/revoke`, { method: "POST" }),
  typing: (chatId: string, state: "composing" | "paused") =>
    request<void>(`/api/chats/${enc(chatId)}/typing`, { method: "POST", json: { state } }),
};

export const searchApi = {
  messages: (params: { q: string; device_id?: string; limit?: number; cursor?: string | null }) =>
    request<Page<SearchHit>>("/api/search/messages", { query: params }),
};

export const quickRepliesApi = {
  list: () => request<{ items: QuickReply[] }>("/api/quick-replies"),
  create: (body: { shortcut: string; body: string }) =>
    request<QuickReply>("/api/quick-replies", { method: "POST", json: body }),
  update: (id: string, body: { shortcut?: string; body?: string }) =>
    request<QuickReply>(`/api/quick-replies/${enc(id)}`, { method: "PUT", json: body }),
  remove: (id: string) => request<void>(`/api/quick-replies/${enc(id)}`, { method: "DELETE" }),
};

export const leadsApi = {
  list: (params: { stage?: string; tag?: string; q?: string; assigned_to?: string; limit?: number; cursor?: string | null }) =>
    request<Page<Lead>>("/api/leads", { query: params }),
  get: (id: string) => request<Lead>(`/api/leads/${enc(id)}`),
  create: (body: LeadInput) => request<Lead>("/api/leads", { method: "POST", json: body }),
  update: (id: string, body: LeadInput) => request<Lead>(`/api/leads/${enc(id)}`, { method: "PUT", json: body }),
  remove: (id: string) => request<void>(`/api/leads/${enc(id)}`, { method: "DELETE" }),
  stages: () => request<{ items: Stage[] }>("/api/pipeline/stages"),
};

export const webhooksApi = {
  list: () => request<{ items: Webhook[] }>("/api/webhooks"),
  eventTypes: () => request<{ items: string[] }>("/api/webhooks/event-types"),
  create: (body: { url: string; events: string[] }) =>
    request<WebhookCreated>("/api/webhooks", { method: "POST", json: body }),
  update: (id: string, body: { url?: string; events?: string[]; active?: boolean }) =>
    request<Webhook>(`/api/webhooks/${enc(id)}`, { method: "PATCH", json: body }),
  remove: (id: string) => request<void>(`/api/webhooks/${enc(id)}`, { method: "DELETE" }),
  deliveries: (id: string, params: { limit?: number; cursor?: string | null }) =>
    request<Page<WebhookDelivery>>(`/api/webhooks/${enc(id)}/deliveries`, { query: params }),
  redeliver: (id: string, deliveryId: string) =>
    request<WebhookDelivery>(`/api/webhooks/${enc(id)}/deliveries/${enc(deliveryId)}/redeliver`, { method: "POST" }),
};
