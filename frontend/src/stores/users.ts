import { create } from "zustand";
import { usersApi } from "../api/endpoints";
import type { Role, User } from "../api/types";
import { onSessionEnd } from "../lib/bus";

interface UsersState {
  items: User[];
  loading: boolean;
  loaded: boolean;
  error: unknown;
  load: () => Promise<void>;
  create: (body: { name: string; email: string; password: string; role: Role }) => Promise<User>;
  update: (id: string, body: { role?: Role; disabled?: boolean }) => Promise<User>;
  remove: (id: string) => Promise<void>;
  reset: () => void;
}

const initial = { items: [] as User[], loading: false, loaded: false, error: null };

export const useUsers = create<UsersState>((set, get) => ({
  ...initial,
  load: async () => {
    set({ loading: true, error: null });
    try {
      const { items } = await usersApi.list();
      set({ items, loading: false, loaded: true });
    } catch (error) {
      set({ loading: false, error });
    }
  },
  create: async (body) => {
    const u = await usersApi.create(body);
    set({ items: [...get().items.filter((x) => x.id !== u.id), u] });
    return u;
  },
  update: async (id, body) => {
    const u = await usersApi.update(id, body);
    set({ items: get().items.map((x) => (x.id === u.id ? u : x)) });
    return u;
  },
  remove: async (id) => {
    await usersApi.remove(id);
    set({ items: get().items.filter((x) => x.id !== id) });
  },
  reset: () => set({ ...initial }),
}));

onSessionEnd(() => useUsers.getState().reset());
