// Media needs the Authorization header, so it is fetched as a blob and shown
// through an object URL, cached per message for the session.
import { messagesApi } from "../api/endpoints";
import { onSessionEnd } from "./bus";

const cache = new Map<string, Promise<string>>();
const MAX = 200;

export function mediaUrl(messageId: string): Promise<string> {
  let p = cache.get(messageId);
  if (!p) {
    p = messagesApi.media(messageId).then((blob) => URL.createObjectURL(blob));
    p.catch(() => cache.delete(messageId)); // let a later render retry
    cache.set(messageId, p);
    if (cache.size > MAX) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) {
        const old = cache.get(oldest);
        cache.delete(oldest);
        void old?.then((u) => URL.revokeObjectURL(u), () => undefined);
      }
    }
  }
  return p;
}

export async function downloadMedia(messageId: string, fileName: string): Promise<void> {
  const url = await mediaUrl(messageId);
  const a = document.createElement("a");
  a.href = url;
  a.download = fileName;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

onSessionEnd(() => {
  for (const p of cache.values()) void p.then((u) => URL.revokeObjectURL(u), () => undefined);
  cache.clear();
});
