import { create } from "zustand";

export interface Toast {
  id: number;
  kind: "error" | "info" | "success";
  text: string;
}

interface ToastState {
  items: Toast[];
  push: (kind: Toast["kind"], text: string) => void;
  dismiss: (id: number) => void;
}

let seq = 0;

export const useToasts = create<ToastState>((set, get) => ({
  items: [],
  push: (kind, text) => {
    const id = ++seq;
    set({ items: [...get().items.slice(-3), { id, kind, text }] });
    setTimeout(() => get().dismiss(id), 5000);
  },
  dismiss: (id) => set({ items: get().items.filter((t) => t.id !== id) }),
}));
