import { MessageSquareText } from "lucide-react";
import { useEffect, useState } from "react";
import { useNavigate } from "react-router";
import { searchApi } from "../api/endpoints";
import type { Chat, SearchHit } from "../api/types";
import { useLang, useT } from "../i18n";
import { cx, shortTime } from "../lib/util";
import { useChats } from "../stores/chats";
import { Spinner } from "./ui";

const PAGE = 20;

function chatName(c: Chat): string {
  return c.name || (c.phone ? `+${c.phone}` : c.jid.split("@")[0] || c.jid);
}

/** The words of `q` in `text`, marked (accents and case ignored, as the server does). */
function Highlighted({ text, q }: { text: string; q: string }) {
  const fold = (s: string) => s.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
  const words = fold(q).split(/[^\p{L}\p{N}]+/u).filter(Boolean);
  if (!words.length) return <>{text}</>;
  // fold char by char so positions in the folded text map back to the original
  const chars = Array.from(text);
  const folded = chars.map((c) => fold(c));
  const marks = new Array<boolean>(chars.length).fill(false);
  const flat = folded.join("");
  const starts: number[] = [];
  let pos = 0;
  for (const f of folded) {
    starts.push(pos);
    pos += f.length;
  }
  for (const w of words) {
    let i = flat.indexOf(w);
    while (i >= 0) {
      for (let k = 0; k < chars.length; k++) {
        const s = starts[k] ?? 0;
        if (s >= i && s < i + w.length) marks[k] = true;
      }
      i = flat.indexOf(w, i + w.length);
    }
  }
  const parts: { t: string; m: boolean }[] = [];
  chars.forEach((c, k) => {
    const last = parts[parts.length - 1];
    if (last && last.m === marks[k]) last.t += c;
    else parts.push({ t: c, m: !!marks[k] });
  });
  return (
    <>
      {parts.map((p, i) =>
        p.m ? (
          <mark key={i} className="rounded bg-amber-200/80 px-0.5 text-slate-900">
            {p.t}
          </mark>
        ) : (
          <span key={i}>{p.t}</span>
        ),
      )}
    </>
  );
}

/** Messages of the whole account matching the inbox search; a click opens the chat at the message. */
export function MessageSearchResults({ q, onPick }: { q: string; onPick?: () => void }) {
  const t = useT();
  const lang = useLang((s) => s.lang);
  const navigate = useNavigate();
  const deviceId = useChats((s) => s.filters.device_id);
  const [hits, setHits] = useState<SearchHit[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [done, setDone] = useState(false);

  useEffect(() => {
    let alive = true;
    setLoading(true);
    setDone(false);
    const id = setTimeout(() => {
      searchApi.messages({ q, device_id: deviceId || undefined, limit: PAGE }).then(
        (page) => {
          if (!alive) return;
          setHits(page.items);
          setCursor(page.next_cursor);
          setLoading(false);
          setDone(true);
        },
        () => {
          if (!alive) return;
          setHits([]);
          setCursor(null);
          setLoading(false);
          setDone(true);
        },
      );
    }, 250);
    return () => {
      alive = false;
      clearTimeout(id);
    };
  }, [q, deviceId]);

  const more = async () => {
    if (!cursor) return;
    setLoading(true);
    try {
      const page = await searchApi.messages({ q, device_id: deviceId || undefined, limit: PAGE, cursor });
      setHits((h) => [...h, ...page.items]);
      setCursor(page.next_cursor);
    } finally {
      setLoading(false);
    }
  };

  const pick = (hit: SearchHit) => {
    const chats = useChats.getState();
    if (!chats.byId[hit.chat.id]) useChats.setState({ byId: { ...chats.byId, [hit.chat.id]: hit.chat } });
    chats.setFocus({ chatId: hit.chat.id, messageId: hit.message.id });
    navigate(`/inbox/${hit.chat.id}`);
    onPick?.();
  };

  return (
    <div data-testid="message-search-results" data-loaded={done ? "true" : "false"}>
      <div className="sticky top-0 border-y border-slate-100 bg-slate-50 px-3 py-1.5 text-[11px] font-semibold tracking-wide text-slate-500 uppercase">
        {t("inbox.msgSearch.title")}
      </div>
      {!done && loading ? (
        <Spinner />
      ) : hits.length === 0 ? (
        <p className="px-3 py-3 text-xs text-slate-500" data-testid="message-search-empty">
          {t("inbox.msgSearch.none")}
        </p>
      ) : (
        <>
          {hits.map((hit) => (
            <button
              key={hit.message.id}
              type="button"
              onClick={() => pick(hit)}
              data-testid="message-search-hit"
              data-message-id={hit.message.id}
              data-chat-id={hit.chat.id}
              className="block w-full border-b border-slate-100 px-3 py-2 text-left hover:bg-slate-50"
            >
              <div className="flex items-baseline justify-between gap-2">
                <span className="flex min-w-0 items-center gap-1 truncate text-xs font-medium text-slate-800">
                  <MessageSquareText className={cx("h-3.5 w-3.5 shrink-0", hit.message.direction === "note" ? "text-amber-600" : "text-slate-400")} />
                  {chatName(hit.chat)}
                </span>
                <span className="shrink-0 text-[11px] text-slate-400">{shortTime(hit.message.sent_at, lang, t)}</span>
              </div>
              <p className="line-clamp-2 text-xs text-slate-600">
                <Highlighted text={hit.message.body ?? ""} q={q} />
              </p>
            </button>
          ))}
          {cursor && (
            <button
              type="button"
              onClick={() => void more()}
              disabled={loading}
              className="w-full px-3 py-2 text-xs font-medium text-brand-700 hover:bg-slate-50"
              data-testid="message-search-more"
            >
              {t("inbox.msgSearch.more")}
            </button>
          )}
        </>
      )}
    </div>
  );
}
