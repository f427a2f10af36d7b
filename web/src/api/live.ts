// Live views: subscribe first, then query, and the same again after every reconnection; keep,
// per id, the copy with the higher version. What changed while the query ran arrives through the
// subscription, and a stale copy never overwrites a newer one, so nothing is missed or rolled back.

import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, socket } from './client';

export interface Versioned {
  id: string;
  version: number;
}

/// Entities by id, each the copy with the highest version seen.
export class VersionedMap<T extends Versioned> {
  readonly items = new Map<string, T>();

  /// Takes `item` unless a copy at least as new is held; says whether it took it.
  put(item: T): boolean {
    const held = this.items.get(item.id);
    if (held && held.version >= item.version) return false;
    this.items.set(item.id, item);
    return true;
  }

  get(id: string): T | undefined {
    return this.items.get(id);
  }

  delete(id: string): void {
    this.items.delete(id);
  }

  values(): T[] {
    return [...this.items.values()];
  }
}

export interface Subscription {
  query: string;
  variables?: Record<string, unknown>;
  // The hook hands each result to the latest `next` given.
  next: (data: any) => void;
  /// Handles the subscription's failure instead of `liveError` (a view with a fallback).
  error?: (error: ApiError) => void;
}

export interface LiveState {
  loading: boolean;
  error: ApiError | null;
  /// The subscription failed: the view still shows what it read, without updates.
  liveError: ApiError | null;
  reload: () => void;
}

/// Subscribes to `subscriptions`, then runs `load`; runs `load` again after each reconnection
/// (graphql-ws resumes the subscriptions first). Both start over when `deps` change.
export function useLive(subscriptions: Subscription[], load: () => Promise<void>, deps: unknown[]): LiveState {
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<ApiError | null>(null);
  const [liveError, setLiveError] = useState<ApiError | null>(null);
  const loadRef = useRef(load);
  loadRef.current = load;
  const nextRef = useRef(subscriptions);
  nextRef.current = subscriptions;
  const runRef = useRef<() => void>(() => {});

  useEffect(() => {
    const s = socket();
    let current = true;
    const stops = subscriptions.map((subscription, index) =>
      s.subscribe(
        subscription.query,
        subscription.variables ?? {},
        (data) => {
          if (current) nextRef.current[index]?.next(data);
        },
        (failure) => {
          if (!current) return;
          const handle = nextRef.current[index]?.error;
          if (handle) handle(failure);
          else setLiveError(failure);
        },
      ),
    );
    const run = () => {
      setLoading(true);
      loadRef.current().then(
        () => {
          if (!current) return;
          setError(null);
          setLoading(false);
        },
        (failure: unknown) => {
          if (!current) return;
          setError(failure instanceof ApiError ? failure : new ApiError(String(failure), 'INTERNAL'));
          setLoading(false);
        },
      );
    };
    runRef.current = run;
    if (s.connection === 'connected') run();
    else setLoading(true);
    const off = s.onConnected(run);
    return () => {
      current = false;
      off();
      stops.forEach((stop) => stop());
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  return { loading, error, liveError, reload: () => runRef.current() };
}

/// A mutation's lifecycle for a form or a button: running, its error, and a function to run it.
export function useMutation<A extends unknown[], R>(
  mutate: (...args: A) => Promise<R>,
): { running: boolean; error: ApiError | null; run: (...args: A) => Promise<R | undefined>; clear: () => void } {
  const [running, setRunning] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const run = async (...args: A) => {
    setRunning(true);
    setError(null);
    try {
      return await mutate(...args);
    } catch (failure) {
      setError(failure instanceof ApiError ? failure : new ApiError(String(failure), 'INTERNAL'));
      return undefined;
    } finally {
      setRunning(false);
    }
  };
  return { running, error, run, clear: () => setError(null) };
}

/// A query or mutation over the tab's socket.
export function gql<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
  return socket().request<T>(query, variables);
}

/// Runs `read` once, a moment after the last of a burst of calls: a view reads a figure again
/// when a change it hears of moves it, not on a timer.
export function useSoon(read: () => Promise<void>, delayMs = 300): () => void {
  const timer = useRef<number | undefined>(undefined);
  const readRef = useRef(read);
  readRef.current = read;
  useEffect(() => () => window.clearTimeout(timer.current), []);
  return () => {
    window.clearTimeout(timer.current);
    timer.current = window.setTimeout(() => void readRef.current().catch(() => {}), delayMs);
  };
}

/// Positions are decimal strings of any length: compared as numbers, without a float.
export function comparePositions(a: string, b: string): number {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}

/// Runs `read` once the read model `projection` has applied the events heard of (their highest
/// position), asking `projections` every `everyMs`; after `giveUpMs` it reads anyway. A view that
/// follows a read model with no subscription of its own hears of changes on the `events` feed,
/// which runs ahead of the read models: it reads again when the read model shows the change, not
/// on a guess. Positions heard while it waits or reads are coalesced into the next round.
export function useProjected(
  projection: string,
  read: () => Promise<void>,
  { everyMs = 100, giveUpMs = 10_000 } = {},
): (position: string) => void {
  const readRef = useRef(read);
  readRef.current = read;
  const state = useRef({ wanted: null as string | null, busy: false, since: 0, timer: undefined as number | undefined });
  useEffect(() => () => window.clearTimeout(state.current.timer), []);
  const round = async () => {
    const s = state.current;
    s.timer = undefined;
    const target = s.wanted;
    if (!target) return;
    s.busy = true;
    try {
      let applied = Date.now() - s.since > giveUpMs;
      if (!applied) {
        const { projections } = await gql<{ projections: { name: string; checkpoint: string }[] }>('{ projections { name checkpoint } }');
        const mine = projections.find((p) => p.name === projection);
        applied = !mine || comparePositions(mine.checkpoint, target) >= 0;
      }
      if (!applied) {
        s.timer = window.setTimeout(() => void round(), everyMs);
        return;
      }
      if (s.wanted === target) s.wanted = null;
      await readRef.current();
    } catch {
      // The next change heard of, or the next reconnection, reads again.
      s.wanted = null;
    } finally {
      s.busy = false;
    }
    if (s.wanted && s.timer === undefined) {
      s.since = Date.now();
      s.timer = window.setTimeout(() => void round(), everyMs);
    }
  };
  return (position: string) => {
    const s = state.current;
    if (!s.wanted || comparePositions(position, s.wanted) > 0) s.wanted = position;
    if (s.busy || s.timer !== undefined) return;
    s.since = Date.now();
    s.timer = window.setTimeout(() => void round(), everyMs);
  };
}
