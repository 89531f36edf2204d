import { create } from "zustand";
import { quickRepliesApi } from "../api/endpoints";
import type { QuickReply } from "../api/types";
import { onSessionEnd } from "../lib/bus";

interface QuickRepliesState {
  items: QuickReply[];
  loading: boolean;
  loaded: boolean;
  error: unknown;
  load: () => Promise<void>;
  create: (body: { shortcut: string; body: string }) => Promise<QuickReply>;
  update: (id: string, body: { shortcut?: string; body?: string }) => Promise<QuickReply>;
  remove: (id: string) => Promise<void>;
  reset: () => void;
}

const initial = { items: [] as QuickReply[], loading: false, loaded: false, error: null };

const byShortcut = (a: QuickReply, b: QuickReply) => a.shortcut.toLowerCase().localeCompare(b.shortcut.toLowerCase());

export const useQuickReplies = create<QuickRepliesState>((set, get) => ({
  ...initial,
  load: async () => {
    set({ loading: true, error: null });
    try {
      const { items } = await quickRepliesApi.list();
      set({ items, loading: false, loaded: true });
    } catch (error) {
      set({ loading: false, error });
    }
  },
  create: async (body) => {
    const r = await quickRepliesApi.create(body);
    set({ items: [...get().items.filter((x) => x.id !== r.id), r].sort(byShortcut) });
    return r;
  },
  update: async (id, body) => {
    const r = await quickRepliesApi.update(id, body);
    set({ items: get().items.map((x) => (x.id === id ? r : x)).sort(byShortcut) });
    return r;
  },
  remove: async (id) => {
    await quickRepliesApi.remove(id);
    set({ items: get().items.filter((x) => x.id !== id) });
  },
  reset: () => set({ ...initial }),
}));

onSessionEnd(() => useQuickReplies.getState().reset());

/** The quick replies whose shortcut matches what follows the "/" (prefix first). */
export function matchQuickReplies(items: QuickReply[], typed: string): QuickReply[] {
  const q = typed.toLowerCase();
  const starts = items.filter((r) => r.shortcut.toLowerCase().startsWith(q));
  const contains = items.filter(
    (r) => !r.shortcut.toLowerCase().startsWith(q) && (r.shortcut.toLowerCase().includes(q) || r.body.toLowerCase().includes(q)),
  );
  return [...starts, ...contains];
}

/** A reply's text for one chat: `{{name}}` becomes the contact's name. */
export function fillTemplate(body: string, vars: { name: string }): string {
  return body.replace(/\{\{\s*name\s*\}\}/gi, vars.name);
}
