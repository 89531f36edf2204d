import { X } from "lucide-react";
import { useT } from "../i18n";
import { cx } from "../lib/util";
import { useToasts } from "../stores/toasts";

export function Toasts() {
  const items = useToasts((s) => s.items);
  const dismiss = useToasts((s) => s.dismiss);
  const t = useT();
  if (!items.length) return null;
  return (
    <div className="pointer-events-none fixed inset-x-0 bottom-20 z-50 flex flex-col items-center gap-2 px-4 md:bottom-6">
      {items.map((toast) => (
        <div
          key={toast.id}
          role={toast.kind === "error" ? "alert" : "status"}
          data-testid={`toast-${toast.kind}`}
          className={cx(
            "pointer-events-auto flex max-w-md items-start gap-3 rounded-lg px-4 py-3 text-sm shadow-lg",
            toast.kind === "error" ? "bg-red-600 text-white" : toast.kind === "success" ? "bg-brand-700 text-white" : "bg-slate-800 text-white",
          )}
        >
          <span className="flex-1">{toast.text}</span>
          <button type="button" onClick={() => dismiss(toast.id)} aria-label={t("common.close")} className="opacity-80 hover:opacity-100">
            <X className="h-4 w-4" />
          </button>
        </div>
      ))}
    </div>
  );
}
