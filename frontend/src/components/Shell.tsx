import { Languages, LogOut, Megaphone, MessageSquare, Smartphone, SquareKanban, Users, Webhook, Zap } from "lucide-react";
import { useEffect, type ComponentType } from "react";
import { NavLink, Outlet } from "react-router";
import { useLang, useT, type TKey } from "../i18n";
import { cx } from "../lib/util";
import { useAuth } from "../stores/auth";
import { useDevices } from "../stores/devices";
import { useLeads } from "../stores/leads";
import { live, useWsStatus } from "../ws";
import { Avatar } from "./ui";

interface NavItem {
  to: string;
  label: TKey;
  icon: ComponentType<{ className?: string }>;
  testid: string;
  adminOnly?: boolean;
}

const NAV: NavItem[] = [
  { to: "/inbox", label: "nav.inbox", icon: MessageSquare, testid: "nav-inbox" },
  { to: "/leads", label: "nav.leads", icon: SquareKanban, testid: "nav-leads" },
  { to: "/devices", label: "nav.devices", icon: Smartphone, testid: "nav-devices" },
  { to: "/quick-replies", label: "nav.quickReplies", icon: Zap, testid: "nav-quick-replies" },
  // everyone changes their own password there; only admins see the user actions
  { to: "/users", label: "nav.users", icon: Users, testid: "nav-users" },
  { to: "/webhooks", label: "nav.webhooks", icon: Webhook, testid: "nav-webhooks", adminOnly: true },
  { to: "/campaigns", label: "nav.campaigns", icon: Megaphone, testid: "nav-campaigns", adminOnly: true },
];

export function LangSwitch({ className, testid = "lang-switch" }: { className?: string; testid?: string }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const setLang = useLang((s) => s.setLang);
  return (
    <button
      type="button"
      data-testid={testid}
      data-lang={lang}
      onClick={() => setLang(lang === "es" ? "en" : "es")}
      className={cx("inline-flex items-center gap-1.5 rounded-lg px-2 py-1.5 text-xs font-medium text-slate-600 hover:bg-slate-100", className)}
      title={t("lang.label")}
    >
      <Languages className="h-4 w-4" />
      {t("lang.switch")}
    </button>
  );
}

function LiveDot({ testid = "ws-status" }: { testid?: string }) {
  const t = useT();
  const status = useWsStatus((s) => s.status);
  const label = status === "open" ? t("ws.open") : status === "closed" ? t("ws.closed") : t("ws.connecting");
  return (
    <span className="inline-flex items-center gap-1.5 text-xs text-slate-500" data-testid={testid} data-status={status} title={label}>
      <span
        className={cx(
          "h-2 w-2 rounded-full",
          status === "open" ? "bg-brand-500" : status === "closed" ? "bg-red-500" : "animate-pulse bg-amber-400",
        )}
      />
      <span className="hidden lg:inline">{label}</span>
    </span>
  );
}

export function Shell() {
  const t = useT();
  const user = useAuth((s) => s.user);
  const account = useAuth((s) => s.account);
  const logout = useAuth((s) => s.logout);
  const loadMe = useAuth((s) => s.loadMe);

  useEffect(() => {
    live.start();
    void loadMe();
    void useDevices.getState().load();
    void useLeads.getState().loadStages();
    return () => live.stop();
  }, [loadMe]);

  const items = NAV.filter((n) => !n.adminOnly || user?.role === "admin");

  return (
    <div className="flex h-full flex-col md:flex-row">
      {/* desktop sidebar */}
      <aside className="hidden w-56 shrink-0 flex-col border-r border-slate-200 bg-white md:flex">
        <div className="flex items-center gap-2 px-4 py-4">
          <img src="/favicon.svg" alt="" className="h-8 w-8" />
          <div className="min-w-0">
            <div className="font-semibold text-slate-900">{t("app.name")}</div>
            <div className="truncate text-xs text-slate-500" data-testid="account-name">{account?.name}</div>
          </div>
        </div>
        <nav className="flex-1 space-y-1 px-2">
          {items.map((n) => (
            <NavLink
              key={n.to}
              to={n.to}
              data-testid={n.testid}
              className={({ isActive }) =>
                cx(
                  "flex items-center gap-3 rounded-lg px-3 py-2 text-sm font-medium",
                  isActive ? "bg-brand-50 text-brand-800" : "text-slate-600 hover:bg-slate-100",
                )
              }
            >
              <n.icon className="h-5 w-5" />
              {t(n.label)}
            </NavLink>
          ))}
        </nav>
        <div className="space-y-2 border-t border-slate-100 p-3">
          <div className="flex items-center justify-between">
            <LiveDot />
            <LangSwitch />
          </div>
          <div className="flex items-center gap-2">
            <Avatar name={user?.name} seed={user?.id} size="sm" />
            <div className="min-w-0 flex-1">
              <div className="truncate text-sm font-medium text-slate-800" data-testid="current-user">{user?.name}</div>
              <div className="truncate text-xs text-slate-500">{user?.email}</div>
            </div>
            <button
              type="button"
              onClick={() => void logout()}
              data-testid="logout-button"
              title={t("nav.logout")}
              aria-label={t("nav.logout")}
              className="rounded-lg p-2 text-slate-500 hover:bg-slate-100 hover:text-slate-800"
            >
              <LogOut className="h-4 w-4" />
            </button>
          </div>
        </div>
      </aside>

      {/* phone top bar */}
      <header className="flex items-center justify-between border-b border-slate-200 bg-white px-3 py-2 md:hidden">
        <div className="flex items-center gap-2">
          <img src="/favicon.svg" alt="" className="h-7 w-7" />
          <span className="font-semibold">{t("app.name")}</span>
          <LiveDot testid="ws-status-mobile" />
        </div>
        <div className="flex items-center gap-1">
          <LangSwitch testid="lang-switch-mobile" />
          <button
            type="button"
            onClick={() => void logout()}
            data-testid="logout-button-mobile"
            aria-label={t("nav.logout")}
            className="rounded-lg p-2 text-slate-500 hover:bg-slate-100"
          >
            <LogOut className="h-4 w-4" />
          </button>
        </div>
      </header>

      <main className="flex min-h-0 min-w-0 flex-1 flex-col">
        <Outlet />
      </main>

      {/* phone tab bar */}
      <nav className="flex border-t border-slate-200 bg-white md:hidden">
        {items.map((n) => (
          <NavLink
            key={n.to}
            to={n.to}
            data-testid={`${n.testid}-mobile`}
            className={({ isActive }) =>
              cx("flex flex-1 flex-col items-center gap-0.5 py-2 text-[11px] font-medium", isActive ? "text-brand-700" : "text-slate-500")
            }
          >
            <n.icon className="h-5 w-5" />
            {t(n.label)}
          </NavLink>
        ))}
      </nav>
    </div>
  );
}
