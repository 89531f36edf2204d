import { create } from "zustand";
import { webhooksApi } from "../api/endpoints";
import type { Webhook, WebhookCreated } from "../api/types";
import { onSessionEnd } from "../lib/bus";

interface WebhooksState {
  items: Webhook[];
  eventTypes: string[];
  loading: boolean;
  loaded: boolean;
  error: unknown;
  load: () => Promise<void>;
  create: (body: { url: string; events: string[] }) => Promise<WebhookCreated>;
  setActive: (id: string, active: boolean) => Promise<void>;
  remove: (id: string) => Promise<void>;
  reset: () => void;
}

const initial = { items: [] as Webhook[], eventTypes: [] as string[], loading: false, loaded: false, error: null };

export const useWebhooks = create<WebhooksState>((set, get) => ({
  ...initial,
  load: async () => {
    set({ loading: true, error: null });
    try {
      const [{ items }, types] = await Promise.all([webhooksApi.list(), webhooksApi.eventTypes()]);
      set({ items, eventTypes: types.items, loading: false, loaded: true });
    } catch (error) {
      set({ loading: false, error });
    }
  },
  create: async (body) => {
    const created = await webhooksApi.create(body);
    const { secret: _secret, ...webhook } = created;
    set({ items: [...get().items.filter((w) => w.id !== created.id), webhook] });
    return created;
  },
  setActive: async (id, active) => {
    const before = get().items;
    set({ items: before.map((w) => (w.id === id ? { ...w, active } : w)) });
    try {
      const updated = await webhooksApi.update(id, { active });
      set({ items: get().items.map((w) => (w.id === id ? updated : w)) });
    } catch (err) {
      set({ items: before });
      throw err;
    }
  },
  remove: async (id) => {
    await webhooksApi.remove(id);
    set({ items: get().items.filter((w) => w.id !== id) });
  },
  reset: () => set({ ...initial }),
}));

onSessionEnd(() => useWebhooks.getState().reset());
