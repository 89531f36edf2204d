import type { ReactNode } from "react";
import { BrowserRouter, Navigate, Route, Routes, useLocation } from "react-router";
import { Shell } from "./components/Shell";
import { Toasts } from "./components/Toasts";
import { DevicesPage } from "./pages/Devices";
import { InboxPage } from "./pages/Inbox";
import { LeadDetailPage } from "./pages/LeadDetail";
import { LeadsPage } from "./pages/Leads";
import { QuickRepliesPage } from "./pages/QuickReplies";
import { LoginPage, RegisterPage } from "./pages/Auth";
import { UsersPage } from "./pages/Users";
import { WebhooksPage } from "./pages/Webhooks";
import { CampaignsPage } from "./pages/Campaigns";
import { useAuth } from "./stores/auth";

function RequireAuth({ children }: { children: ReactNode }) {
  const status = useAuth((s) => s.status);
  const location = useLocation();
  if (status !== "authenticated") {
    return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  }
  return <>{children}</>;
}

function GuestOnly({ children }: { children: ReactNode }) {
  const status = useAuth((s) => s.status);
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from;
  if (status === "authenticated") return <Navigate to={from && from !== "/login" ? from : "/inbox"} replace />;
  return <>{children}</>;
}

export function App() {
  return (
    <BrowserRouter>
      <Routes>
        <Route path="/login" element={<GuestOnly><LoginPage /></GuestOnly>} />
        <Route path="/register" element={<GuestOnly><RegisterPage /></GuestOnly>} />
        <Route element={<RequireAuth><Shell /></RequireAuth>}>
          <Route index element={<Navigate to="/inbox" replace />} />
          <Route path="inbox" element={<InboxPage />} />
          <Route path="inbox/:chatId" element={<InboxPage />} />
          <Route path="devices" element={<DevicesPage />} />
          <Route path="leads" element={<LeadsPage />} />
          <Route path="leads/:leadId" element={<LeadDetailPage />} />
          <Route path="users" element={<UsersPage />} />
          <Route path="quick-replies" element={<QuickRepliesPage />} />
          <Route path="webhooks" element={<WebhooksPage />} />
          <Route path="campaigns" element={<CampaignsPage />} />
        </Route>
        <Route path="*" element={<Navigate to="/" replace />} />
      </Routes>
      <Toasts />
    </BrowserRouter>
  );
}
