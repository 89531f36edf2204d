import { create } from "zustand";
import { leadsApi } from "../api/endpoints";
import type { Lead, LeadInput, Stage } from "../api/types";
import { onSessionEnd } from "../lib/bus";

export const DEFAULT_STAGES: Stage[] = ["new", "contacted", "qualified", "proposal", "won", "lost"].map(
  (key, position) => ({ key, name: key, position }),
);

export type LeadView = "table" | "kanban";

export interface LeadFilters {
  q: string;
  stage: string;
  tag: string;
}

interface LeadsState {
  items: Lead[];
  byId: Record<string, Lead>;
  stages: Stage[];
  stagesLoaded: boolean;
  filters: LeadFilters;
  view: LeadView;
  cursor: string | null;
  loading: boolean;
  loadingMore: boolean;
  loaded: boolean;
  error: unknown;

  loadStages: () => Promise<void>;
  setFilters: (f: Partial<LeadFilters>) => Promise<void>;
  setView: (v: LeadView) => Promise<void>;
  load: (opts?: { soft?: boolean }) => Promise<void>;
  loadMore: () => Promise<void>;
  fetchLead: (id: string) => Promise<Lead | null>;
  create: (body: LeadInput) => Promise<Lead>;
  update: (id: string, body: LeadInput) => Promise<Lead>;
  move: (id: string, stage: string) => Promise<void>;
  remove: (id: string) => Promise<void>;
  upsert: (lead: Lead) => void;
  forget: (id: string) => void;
  reset: () => void;
}

const initial = {
  items: [] as Lead[],
  byId: {} as Record<string, Lead>,
  stages: DEFAULT_STAGES,
  stagesLoaded: false,
  filters: { q: "", stage: "", tag: "" },
  view: "table" as LeadView,
  cursor: null,
  loading: false,
  loadingMore: false,
  loaded: false,
  error: null,
};

/** Does a lead belong in the list for these filters (stage ignored on the kanban)? */
export function leadMatches(lead: Lead, f: LeadFilters, view: LeadView): boolean {
  if (view === "table" && f.stage && lead.stage !== f.stage) return false;
  if (f.tag && !lead.tags.some((t) => t.toLocaleLowerCase() === f.tag.trim().toLocaleLowerCase())) return false;
  const q = f.q.trim().toLocaleLowerCase();
  if (!q) return true;
  return [lead.name, lead.phone, lead.email, lead.company].some((v) => (v ?? "").toLocaleLowerCase().includes(q));
}

function newestFirst(a: Lead, b: Lead): number {
  return a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0;
}

let seq = 0;

export const useLeads = create<LeadsState>((set, get) => ({
  ...initial,

  loadStages: async () => {
    try {
      const { items } = await leadsApi.stages();
      if (items.length) set({ stages: items.slice().sort((a, b) => a.position - b.position), stagesLoaded: true });
    } catch {
      /* keep the defaults */
    }
  },

  setFilters: async (f) => {
    set({ filters: { ...get().filters, ...f } });
    await get().load();
  },

  setView: async (view) => {
    if (view === get().view) return;
    set({ view });
    await get().load();
  },

  load: async (opts) => {
    const my = ++seq;
    set(opts?.soft ? { error: null } : { loading: true, error: null });
    const { filters, view } = get();
    try {
      const page = await leadsApi.list({
        q: filters.q.trim() || undefined,
        tag: filters.tag.trim() || undefined,
        stage: view === "table" ? filters.stage || undefined : undefined,
        limit: view === "kanban" ? 200 : 50,
      });
      if (my !== seq) return;
      const byId = { ...get().byId };
      for (const l of page.items) byId[l.id] = l;
      set({ items: page.items, byId, cursor: page.next_cursor, loading: false, loaded: true });
    } catch (error) {
      if (my === seq) set({ loading: false, error });
    }
  },

  loadMore: async () => {
    const { cursor, loadingMore, filters, view } = get();
    if (!cursor || loadingMore) return;
    const my = seq;
    set({ loadingMore: true });
    try {
      const page = await leadsApi.list({
        q: filters.q.trim() || undefined,
        tag: filters.tag.trim() || undefined,
        stage: view === "table" ? filters.stage || undefined : undefined,
        limit: view === "kanban" ? 200 : 50,
        cursor,
      });
      if (my !== seq) return;
      const byId = { ...get().byId };
      const items = get().items.slice();
      for (const l of page.items) {
        byId[l.id] = l;
        if (!items.some((x) => x.id === l.id)) items.push(l);
      }
      set({ items, byId, cursor: page.next_cursor, loadingMore: false });
    } catch (error) {
      set({ loadingMore: false, error });
    }
  },

  fetchLead: async (id) => {
    try {
      const lead = await leadsApi.get(id);
      get().upsert(lead);
      return lead;
    } catch {
      return null;
    }
  },

  create: async (body) => {
    const lead = await leadsApi.create(body);
    get().upsert(lead);
    return lead;
  },

  update: async (id, body) => {
    const lead = await leadsApi.update(id, body);
    get().upsert(lead);
    return lead;
  },

  move: async (id, stage) => {
    const before = get().byId[id];
    if (!before || before.stage === stage) return;
    get().upsert({ ...before, stage }); // optimistic
    try {
      const lead = await leadsApi.update(id, { stage });
      get().upsert(lead);
    } catch (e) {
      const cur = get().byId[id];
      if (cur && cur.stage === stage) get().upsert({ ...cur, stage: before.stage });
      throw e;
    }
  },

  remove: async (id) => {
    await leadsApi.remove(id);
    get().forget(id);
  },

  upsert: (lead) => {
    const { items, byId, filters, view, loaded } = get();
    const prev = byId[lead.id];
    // ignore a frame older than what we hold
    if (prev && prev.updated_at && lead.updated_at && lead.updated_at < prev.updated_at) return;
    const nextById = { ...byId, [lead.id]: lead };
    const idx = items.findIndex((l) => l.id === lead.id);
    const matches = leadMatches(lead, filters, view);
    let next = items;
    if (idx >= 0) next = matches ? items.map((l) => (l.id === lead.id ? lead : l)) : items.filter((l) => l.id !== lead.id);
    else if (matches && loaded) next = [lead, ...items].sort(newestFirst);
    set({ byId: nextById, items: next });
  },

  forget: (id) => {
    const byId = { ...get().byId };
    delete byId[id];
    set({ byId, items: get().items.filter((l) => l.id !== id) });
  },

  reset: () => {
    seq++;
    set({ ...initial });
  },
}));

onSessionEnd(() => useLeads.getState().reset());
