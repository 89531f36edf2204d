import { AlertTriangle, LoaderCircle, Phone, Plus, QrCode, RefreshCw, Smartphone } from "lucide-react";
import { QRCodeSVG } from "qrcode.react";
import { useEffect, useState, type FormEvent } from "react";
import { ApiError, fieldErrors } from "../api/client";
import { devicesApi } from "../api/endpoints";
import type { Device, DeviceStatus } from "../api/types";
import { Banner, Button, ConfirmDialog, EmptyState, ErrorState, Field, Input, Modal, PageHeader, Spinner } from "../components/ui";
import { useLang, useT, type TKey } from "../i18n";
import { cx, dateTime, errorText } from "../lib/util";
import { useAuth } from "../stores/auth";
import { isPairing, isReconnecting, useDevices } from "../stores/devices";
import { useToasts } from "../stores/toasts";

const STATUS_STYLE: Record<DeviceStatus, string> = {
  connected: "bg-brand-100 text-brand-800",
  connecting: "bg-amber-100 text-amber-800",
  qr_pending: "bg-sky-100 text-sky-800",
  disconnected: "bg-slate-100 text-slate-600",
  logged_out: "bg-slate-100 text-slate-600",
  error: "bg-red-100 text-red-700",
};

export function StatusBadge({ status }: { status: DeviceStatus }) {
  const t = useT();
  return (
    <span
      data-testid="device-status"
      data-status={status}
      className={cx("inline-flex items-center gap-1.5 rounded-full px-2.5 py-0.5 text-xs font-medium", STATUS_STYLE[status])}
    >
      <span
        className={cx(
          "h-1.5 w-1.5 rounded-full bg-current",
          (status === "connecting" || status === "qr_pending") && "animate-pulse",
        )}
      />
      {t(`devices.status.${status}` as TKey)}
    </span>
  );
}

// How a pairing or an unlink ended is told by last_error (docs/API.md, "Devices:
// linking, the end of a pairing, unlinking"): the worker's wording, matched here.
export function qrExpired(device: Device): boolean {
  return device.status === "disconnected" && !!device.last_error?.startsWith("The QR code expired");
}

export function unlinkFailed(device: Device): boolean {
  return device.status === "logged_out" && !!device.last_error?.includes("still lists this device");
}

function useNow(active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    const id = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(id);
  }, [active]);
  return now;
}

function QrPanel({ device }: { device: Device }) {
  const t = useT();
  const qr = useDevices((s) => s.qr[device.id]);
  const setQr = useDevices((s) => s.setQr);
  const now = useNow(true);
  const expiresAt = qr ? Date.parse(qr.expires_at) : NaN;
  const expired = !!qr && !Number.isNaN(expiresAt) && expiresAt <= now;
  const needsFetch = !qr || expired;

  // Open: ask for the pending QR; then poll while we have none (frames may be delayed or the socket down).
  useEffect(() => {
    if (!needsFetch) return;
    let stop = false;
    const fetchQr = async () => {
      try {
        const code = await devicesApi.qr(device.id);
        if (!stop) setQr(device.id, code);
      } catch {
        /* 404: none pending yet */
      }
    };
    void fetchQr();
    const id = setInterval(fetchQr, 3000);
    return () => {
      stop = true;
      clearInterval(id);
    };
  }, [device.id, needsFetch, setQr]);

  return (
    <div className="flex flex-col items-center gap-3 sm:flex-row sm:items-start">
      <div className="relative flex h-[216px] w-[216px] shrink-0 items-center justify-center rounded-xl border border-slate-200 bg-white p-2">
        {qr ? (
          <div data-testid="device-qr" data-code={qr.code} data-expired={expired ? "true" : "false"} className={cx(expired && "opacity-25")}>
            <QRCodeSVG value={qr.code} size={196} level="L" marginSize={0} title={t("devices.qr.title")} />
          </div>
        ) : (
          <div data-testid="device-qr-waiting" className="flex flex-col items-center gap-2 text-center text-xs text-slate-500">
            <LoaderCircle className="h-6 w-6 animate-spin text-brand-600" />
            {t("devices.qr.waiting")}
          </div>
        )}
        {expired && (
          <div className="absolute inset-0 flex items-center justify-center p-4 text-center text-xs font-medium text-slate-700">
            {t("devices.qr.expired")}
          </div>
        )}
      </div>
      <div className="space-y-2 text-sm text-slate-600">
        <p className="font-medium text-slate-800">{t("devices.qr.title")}</p>
        <p>{t("devices.qr.steps")}</p>
        {qr && !expired && !Number.isNaN(expiresAt) && (
          <p className="text-xs text-slate-400">{t("devices.qr.expiresIn", { s: Math.max(0, Math.round((expiresAt - now) / 1000)) })}</p>
        )}
      </div>
    </div>
  );
}

function PhonePairPanel({ device }: { device: Device }) {
  const t = useT();
  const code = useDevices((s) => s.pairing[device.id]);
  const setPairing = useDevices((s) => s.setPairing);
  const [phone, setPhone] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const res = await devicesApi.pairPhone(device.id, phone.replace(/[^\d]/g, ""));
      setPairing(device.id, res.pairing_code);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const fields = fieldErrors(error);

  return (
    <div className="space-y-3">
      <form onSubmit={submit} className="flex flex-col gap-2 sm:flex-row sm:items-end" noValidate>
        <div className="flex-1">
          <Field label={t("devices.pair.phone")} error={fields.phone ?? (error && !fields.phone ? errorText(t, error) : undefined)}>
            <Input
              inputMode="tel"
              value={phone}
              onChange={(e) => setPhone(e.target.value)}
              placeholder={t("devices.pair.phonePlaceholder")}
              data-testid="device-pair-phone-input"
            />
          </Field>
        </div>
        <Button type="submit" variant="primary" busy={busy} disabled={!phone.trim()} data-testid="device-pair-phone-submit">
          {t("devices.pair.submit")}
        </Button>
      </form>
      {code && (
        <div className="rounded-xl border border-brand-200 bg-brand-50 p-4 text-center">
          <p className="text-sm text-slate-600">{t("devices.pair.code")}</p>
          <p className="mt-1 font-mono text-3xl font-semibold tracking-[0.25em] text-brand-800" data-testid="device-pairing-code">
            {code}
          </p>
          <p className="mt-1 text-xs text-slate-500">{t("devices.pair.hint")}</p>
        </div>
      )}
    </div>
  );
}

function DeviceCard({ device }: { device: Device }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const upsert = useDevices((s) => s.upsert);
  const remove = useDevices((s) => s.remove);
  const toast = useToasts((s) => s.push);
  const isAdmin = useAuth((s) => s.user?.role === "admin");
  const [busy, setBusy] = useState<string | null>(null);
  const [mode, setMode] = useState<"qr" | "phone">("qr");
  const [confirm, setConfirm] = useState<"logout" | "delete" | null>(null);
  const pairing = isPairing(device);
  const reconnecting = isReconnecting(device);

  const act = async (name: string, fn: () => Promise<Device | void>) => {
    setBusy(name);
    try {
      const d = await fn();
      if (d) upsert(d);
    } catch (e) {
      toast("error", errorText(t, e));
    } finally {
      setBusy(null);
    }
  };

  return (
    <div
      className="rounded-2xl border border-slate-200 bg-white p-4 shadow-sm"
      data-testid="device-card"
      data-device-id={device.id}
      data-status={device.status}
    >
      <div className="flex items-start justify-between gap-3">
        <div className="flex min-w-0 items-center gap-3">
          <div className={cx("rounded-xl p-2.5", device.status === "connected" ? "bg-brand-50 text-brand-700" : "bg-slate-100 text-slate-500")}>
            <Smartphone className="h-5 w-5" />
          </div>
          <div className="min-w-0">
            <div className="truncate font-semibold text-slate-900" data-testid="device-name">{device.name}</div>
            <div className="truncate text-sm text-slate-500" data-testid="device-phone">
              {device.phone ? `+${device.phone.replace(/^\+/, "")}` : t("devices.noPhone")}
            </div>
          </div>
        </div>
        <StatusBadge status={device.status} />
      </div>

      {device.status === "error" && (
        <div className="mt-3">
          <Banner testid="device-error">
            <div className="flex items-start gap-2">
              <AlertTriangle className="mt-0.5 h-4 w-4 shrink-0" />
              <div>
                <div className="font-medium">{t("devices.error.title")}</div>
                <div className="break-words">{device.last_error || t("devices.error.unknown")}</div>
              </div>
            </div>
          </Banner>
        </div>
      )}

      {qrExpired(device) && (
        <div className="mt-4 flex flex-col items-center gap-3 rounded-xl bg-slate-50 p-4 text-center" data-testid="device-qr-expired">
          <div className="flex h-[96px] w-[96px] items-center justify-center rounded-xl border border-dashed border-slate-300 bg-white text-slate-300">
            <QrCode className="h-12 w-12" />
          </div>
          <div>
            <p className="font-medium text-slate-800">{t("devices.qrExpired.title")}</p>
            <p className="text-sm text-slate-600">{t("devices.qrExpired.text")}</p>
          </div>
          <Button variant="primary" busy={busy === "connect"} onClick={() => act("connect", () => devicesApi.connect(device.id))} data-testid="device-qr-expired-connect">
            {t("devices.qrExpired.retry")}
          </Button>
        </div>
      )}

      {unlinkFailed(device) && (
        <div className="mt-3">
          <Banner kind="warning" testid="device-unlink-failed">
            <div className="flex items-start gap-2">
              <AlertTriangle className="mt-0.5 h-4 w-4 shrink-0" />
              <div>
                <div className="font-medium">{t("devices.unlinkFailed.title")}</div>
                <div>{t("devices.unlinkFailed.text")}</div>
              </div>
            </div>
          </Banner>
        </div>
      )}

      {reconnecting && (
        <p className="mt-3 flex items-center gap-2 text-sm text-slate-600" data-testid="device-reconnecting">
          <RefreshCw className="h-4 w-4 shrink-0 animate-spin text-amber-600" />
          {t("devices.reconnecting")}
        </p>
      )}

      {pairing && (
        <div className="mt-4 rounded-xl bg-slate-50 p-3" data-testid="device-pairing">
          {mode === "qr" || !isAdmin ? <QrPanel device={device} /> : <PhonePairPanel device={device} />}
          {isAdmin && <button
            type="button"
            className="mt-3 inline-flex items-center gap-1.5 text-sm font-medium text-brand-700 hover:underline"
            onClick={() => setMode(mode === "qr" ? "phone" : "qr")}
            data-testid="device-pair-mode"
          >
            {mode === "qr" ? <Phone className="h-4 w-4" /> : <QrCode className="h-4 w-4" />}
            {mode === "qr" ? t("devices.pair.toggle") : t("devices.pair.toggleQr")}
          </button>}
        </div>
      )}

      <div className="mt-4 flex flex-wrap items-center justify-between gap-2">
        <span className="text-xs text-slate-400">
          {device.last_seen_at ? t("devices.lastSeen", { when: dateTime(device.last_seen_at, lang) }) : ""}
        </span>
        <div className="flex flex-wrap gap-2">
          {(device.status === "disconnected" || device.status === "logged_out" || device.status === "error") && !qrExpired(device) && (
            <Button size="sm" variant="primary" busy={busy === "connect"} onClick={() => act("connect", () => devicesApi.connect(device.id))} data-testid="device-connect">
              {t("devices.connect")}
            </Button>
          )}
          {(device.status === "connected" || pairing || reconnecting) && (
            <Button size="sm" busy={busy === "disconnect"} onClick={() => act("disconnect", () => devicesApi.disconnect(device.id))} data-testid="device-disconnect">
              {t("devices.disconnect")}
            </Button>
          )}
          {isAdmin && device.status === "connected" && (
            <Button size="sm" busy={busy === "logout"} onClick={() => setConfirm("logout")} data-testid="device-logout">
              {t("devices.logout")}
            </Button>
          )}
          {isAdmin && (
            <Button size="sm" variant="danger" busy={busy === "delete"} onClick={() => setConfirm("delete")} data-testid="device-delete">
              {t("devices.delete")}
            </Button>
          )}
        </div>
      </div>

      {confirm === "logout" && (
        <ConfirmDialog
          title={t("devices.logout")}
          text={t("devices.logoutConfirm", { name: device.name })}
          confirmLabel={t("devices.logout")}
          onClose={() => setConfirm(null)}
          onConfirm={() => act("logout", () => devicesApi.logout(device.id))}
        />
      )}
      {confirm === "delete" && (
        <ConfirmDialog
          title={t("devices.delete")}
          text={t("common.confirmDelete", { name: device.name })}
          confirmLabel={t("devices.delete")}
          onClose={() => setConfirm(null)}
          onConfirm={() =>
            act("delete", async () => {
              try {
                await devicesApi.remove(device.id);
              } catch (e) {
                if (!(e instanceof ApiError && e.status === 404)) throw e;
              }
              remove(device.id);
            })
          }
        />
      )}
    </div>
  );
}

function AddDeviceModal({ onClose }: { onClose: () => void }) {
  const t = useT();
  const upsert = useDevices((s) => s.upsert);
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const created = await devicesApi.create(name.trim());
      upsert(created);
      onClose();
      // straight to pairing: the QR shows on the card
      try {
        upsert(await devicesApi.connect(created.id));
      } catch (err) {
        useToasts.getState().push("error", errorText(t, err));
      }
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  const fields = fieldErrors(error);

  return (
    <Modal title={t("devices.add")} onClose={onClose} testid="add-device-modal">
      <form onSubmit={submit} className="space-y-4" noValidate>
        {error !== null && !fields.name && <Banner>{errorText(t, error)}</Banner>}
        <Field label={t("devices.name")} error={fields.name}>
          <Input autoFocus value={name} onChange={(e) => setName(e.target.value)} placeholder={t("devices.namePlaceholder")} data-testid="device-name-input" invalid={!!fields.name} />
        </Field>
        <div className="flex justify-end gap-2">
          <Button onClick={onClose}>{t("common.cancel")}</Button>
          <Button type="submit" variant="primary" busy={busy} disabled={!name.trim()} data-testid="device-create-submit">
            {t("devices.createAndConnect")}
          </Button>
        </div>
      </form>
    </Modal>
  );
}

export function DevicesPage() {
  const t = useT();
  const { items, loading, loaded, error, load } = useDevices();
  const [adding, setAdding] = useState(false);
  // linking and unlinking numbers is for admins (API.md "Roles")
  const isAdmin = useAuth((s) => s.user?.role === "admin");

  useEffect(() => {
    void load();
  }, [load]);

  return (
    <div className="flex-1 overflow-y-auto p-4 md:p-6" data-testid="devices-page">
      <PageHeader
        title={t("devices.title")}
        subtitle={t("devices.subtitle")}
        actions={
          isAdmin && (
            <Button variant="primary" onClick={() => setAdding(true)} data-testid="add-device-button">
              <Plus className="h-4 w-4" />
              {t("devices.add")}
            </Button>
          )
        }
      />
      {loading && !loaded ? (
        <Spinner />
      ) : error && !loaded ? (
        <ErrorState error={error} onRetry={() => void load()} />
      ) : items.length === 0 ? (
        <EmptyState
          title={t("devices.empty")}
          hint={t("devices.emptyHint")}
          icon={<Smartphone className="h-6 w-6" />}
          action={
            isAdmin && (
              <Button variant="primary" onClick={() => setAdding(true)}>
                <Plus className="h-4 w-4" />
                {t("devices.add")}
              </Button>
            )
          }
        />
      ) : (
        <div className="grid gap-4 lg:grid-cols-2" data-testid="device-list">
          {items.map((d) => (
            <DeviceCard key={d.id} device={d} />
          ))}
        </div>
      )}
      {adding && <AddDeviceModal onClose={() => setAdding(false)} />}
    </div>
  );
}
