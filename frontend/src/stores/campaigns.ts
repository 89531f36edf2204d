import { create } from "zustand";
import { campaignsApi } from "../api/endpoints";
import type { Audience, Campaign, CampaignAction } from "../api/types";
import { onSessionEnd } from "../lib/bus";

interface CampaignsState {
  items: Campaign[];
  loading: boolean;
  loaded: boolean;
  error: unknown;
  load: () => Promise<void>;
  /** a campaign_progress frame, or an answer of the API */
  upsert: (c: Campaign) => void;
  create: (body: { name: string; device_id: string; body: string; audience: Audience; per_minute?: number }) => Promise<Campaign>;
  act: (id: string, action: CampaignAction) => Promise<void>;
  reset: () => void;
}

const initial = { items: [] as Campaign[], loading: false, loaded: false, error: null };

function newestFirst(a: Campaign, b: Campaign): number {
  return a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0;
}

export const useCampaigns = create<CampaignsState>((set, get) => ({
  ...initial,
  load: async () => {
    set({ loading: true, error: null });
    try {
      const { items } = await campaignsApi.list();
      set({ items, loading: false, loaded: true });
    } catch (error) {
      set({ loading: false, error });
    }
  },
  upsert: (c) => set({ items: [...get().items.filter((x) => x.id !== c.id), c].sort(newestFirst) }),
  create: async (body) => {
    const created = await campaignsApi.create(body);
    get().upsert(created);
    return created;
  },
  act: async (id, action) => {
    get().upsert(await campaignsApi.act(id, action));
  },
  reset: () => set({ ...initial }),
}));

onSessionEnd(() => useCampaigns.getState().reset());
