// The one WebSocket of a tab. Queries, mutations and subscriptions all go over it (graphql-ws,
// `graphql-transport-ws`), so once the page has loaded it makes no HTTP request but `/session`.
//
// The socket reconnects by itself with a jittered backoff. Each time it is (re)connected, the
// `connected` listeners run after graphql-ws has sent the subscriptions it resumes, so a view that
// queries from such a listener has subscribed before it reads: nothing that changed in between is
// missed. When the server ends the session (4401) or the user was deactivated (4403), the client
// stops and the shell asks `/session` who is signed in now.

import { createClient, type Client } from 'graphql-ws';

/// An error as the API reports it: its message and `extensions.code`.
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export type Connection = 'connecting' | 'connected' | 'reconnecting' | 'ended';

type Listener<T> = (value: T) => void;

/// Close codes after which reconnecting with the same credentials is pointless.
const SESSION_ENDED = 4401;
const USER_DEACTIVATED = 4403;

/// Development only: a bearer token for the socket, for a `devart serve` without sessions. Vite
/// replaces `import.meta.env.DEV` with `false` in the production build, which drops this.
function developmentToken(): string | undefined {
  if (import.meta.env.DEV) return import.meta.env.VITE_DEVART_TOKEN || undefined;
  return undefined;
}

function socketUrl(): string {
  const { protocol, host } = window.location;
  return `${protocol === 'https:' ? 'wss' : 'ws'}://${host}/graphql`;
}

interface GraphQLErrorLike {
  message: string;
  extensions?: { code?: string };
}

/// Turns what graphql-ws hands a sink on failure into an `ApiError`.
function toApiError(failure: unknown): ApiError {
  if (failure instanceof ApiError) return failure;
  if (Array.isArray(failure) && failure.length > 0) {
    const first = failure[0] as GraphQLErrorLike;
    return new ApiError(first.message, first.extensions?.code ?? 'INTERNAL');
  }
  if (failure && typeof failure === 'object' && 'code' in failure && 'reason' in failure) {
    const close = failure as { code: number; reason: string };
    return new ApiError(close.reason || `connection closed (${close.code})`, closeCode(close.code));
  }
  if (failure instanceof Error) return new ApiError(failure.message, 'UNAVAILABLE');
  return new ApiError('the connection to devart was lost', 'UNAVAILABLE');
}

function closeCode(code: number): string {
  if (code === SESSION_ENDED) return 'UNAUTHENTICATED';
  if (code === USER_DEACTIVATED) return 'FORBIDDEN';
  return 'UNAVAILABLE';
}

function firstError(errors: readonly GraphQLErrorLike[] | undefined): ApiError | undefined {
  if (!errors || errors.length === 0) return undefined;
  return new ApiError(errors[0].message, errors[0].extensions?.code ?? 'INTERNAL');
}

export class Socket {
  private client: Client;
  private state: Connection = 'connecting';
  private everConnected = false;
  private readonly stateListeners = new Set<Listener<Connection>>();
  private readonly connectedListeners = new Set<Listener<void>>();
  private readonly endedListeners = new Set<Listener<number>>();

  constructor() {
    this.client = this.open();
  }

  private open(): Client {
    const token = developmentToken();
    return createClient({
      url: socketUrl(),
      lazy: false,
      keepAlive: 20_000,
      retryAttempts: Number.POSITIVE_INFINITY,
      // ¼ s doubling to 3 s, each wait drawn between half and all of it: a page is back within
      // 3 s of its server, and the jitter spreads the tabs of a restarted server over 1.5 s.
      retryWait: (retries) => {
        const ceiling = Math.min(250 * 2 ** retries, 3_000);
        return new Promise((resolve) => setTimeout(resolve, ceiling / 2 + (Math.random() * ceiling) / 2));
      },
      shouldRetry: (event) => !isClose(event) || event.code !== USER_DEACTIVATED,
      connectionParams: token ? { Authorization: `Bearer ${token}` } : {},
      on: {
        connecting: () => this.setState(this.everConnected ? 'reconnecting' : 'connecting'),
        connected: () => {
          this.everConnected = true;
          this.setState('connected');
          // After the subscriptions graphql-ws resumes on this socket have been sent.
          setTimeout(() => this.connectedListeners.forEach((listener) => listener()), 0);
        },
        closed: (event) => {
          if (isClose(event) && (event.code === SESSION_ENDED || event.code === USER_DEACTIVATED)) {
            this.setState('ended');
            this.endedListeners.forEach((listener) => listener(event.code));
          } else if (this.state !== 'ended') {
            this.setState('reconnecting');
          }
        },
      },
    });
  }

  /// Opens a new socket after the session changed (a new role, a fresh sign-in).
  restart(): void {
    void this.client.dispose();
    this.everConnected = false;
    this.client = this.open();
  }

  close(): void {
    this.setState('ended');
    void this.client.dispose();
  }

  get connection(): Connection {
    return this.state;
  }

  private setState(state: Connection): void {
    if (this.state === state) return;
    this.state = state;
    this.stateListeners.forEach((listener) => listener(state));
  }

  onState(listener: Listener<Connection>): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /// Runs `listener` after every (re)connection, once the resumed subscriptions were sent.
  onConnected(listener: Listener<void>): () => void {
    this.connectedListeners.add(listener);
    return () => this.connectedListeners.delete(listener);
  }

  /// Runs `listener` with the close code when the server ended the session or the user.
  onEnded(listener: Listener<number>): () => void {
    this.endedListeners.add(listener);
    return () => this.endedListeners.delete(listener);
  }

  /// A query or mutation over the socket: its data, or the first error as an `ApiError`.
  request<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      this.client.subscribe<T>(
        { query, variables },
        {
          next: (result) => {
            settled = true;
            const error = firstError(result.errors as GraphQLErrorLike[] | undefined);
            if (error) reject(error);
            else resolve(result.data as T);
          },
          error: (failure) => {
            settled = true;
            reject(toApiError(failure));
          },
          complete: () => {
            if (!settled) reject(new ApiError('no answer from devart', 'UNAVAILABLE'));
          },
        },
      );
    });
  }

  /// A subscription over the socket; resumed by graphql-ws after each reconnection. Returns the
  /// function that ends it.
  subscribe<T>(
    query: string,
    variables: Record<string, unknown>,
    next: (data: T) => void,
    error: (error: ApiError) => void = () => {},
  ): () => void {
    return this.client.subscribe<T>(
      { query, variables },
      {
        next: (result) => {
          const failure = firstError(result.errors as GraphQLErrorLike[] | undefined);
          if (failure) error(failure);
          else if (result.data) next(result.data as T);
        },
        error: (failure) => error(toApiError(failure)),
        complete: () => {},
      },
    );
  }
}

function isClose(event: unknown): event is { code: number; reason: string } {
  return !!event && typeof event === 'object' && 'code' in event;
}

/// The tab's socket, opened when a user is signed in.
let current: Socket | undefined;

export function socket(): Socket {
  if (!current) current = new Socket();
  return current;
}

export function closeSocket(): void {
  current?.close();
  current = undefined;
}

export function hasDevelopmentToken(): boolean {
  return developmentToken() !== undefined;
}
