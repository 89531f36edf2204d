import { create } from "zustand";
import { configureClient, tokens, ApiError } from "../api/client";
import { authApi } from "../api/endpoints";
import type { Account, Session, User } from "../api/types";
import { endSession } from "../lib/bus";

export type AuthStatus = "authenticated" | "anonymous";

interface AuthState {
  status: AuthStatus;
  user: User | null;
  account: Account | null;
  /** set when the session ended on its own (failed refresh) */
  expired: boolean;
  login: (email: string, password: string) => Promise<void>;
  register: (body: { account_name: string; name: string; email: string; password: string }) => Promise<void>;
  logout: () => Promise<void>;
  applySession: (s: Session) => void;
  expire: () => void;
  loadMe: () => Promise<void>;
}

const profile = tokens.profile;
const hasSession = !!tokens.refresh;

export const useAuth = create<AuthState>((set, get) => ({
  status: hasSession ? "authenticated" : "anonymous",
  user: hasSession ? (profile?.user ?? null) : null,
  account: hasSession ? (profile?.account ?? null) : null,
  expired: false,

  applySession: (s) => {
    tokens.save(s);
    set({ status: "authenticated", user: s.user, account: s.account, expired: false });
  },

  login: async (email, password) => {
    const s = await authApi.login(email, password);
    get().applySession(s);
  },

  register: async (body) => {
    const s = await authApi.register(body);
    get().applySession(s);
  },

  logout: async () => {
    const rt = tokens.refresh;
    tokens.clear();
    endSession();
    set({ status: "anonymous", user: null, account: null, expired: false });
    if (rt) {
      try {
        await authApi.logout(rt);
      } catch {
        /* the session is gone locally either way */
      }
    }
  },

  expire: () => {
    if (get().status === "anonymous") return;
    tokens.clear();
    endSession();
    set({ status: "anonymous", user: null, account: null, expired: true });
  },

  loadMe: async () => {
    try {
      const me = await authApi.me();
      tokens.saveProfile(me);
      set({ user: me.user, account: me.account });
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) get().expire();
    }
  },
}));

configureClient({
  onAuthFailure: () => useAuth.getState().expire(),
  onSession: (s) => useAuth.setState({ user: s.user, account: s.account }),
});
