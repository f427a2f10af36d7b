// People's sessions: `POST /session` signs in and sets the HttpOnly cookie the socket is then
// opened with, `GET /session` says who is signed in (their role as it is now), `DELETE /session`
// signs out. Every call carries `X-Devart-Csrf: 1`.

import { ApiError, hasDevelopmentToken, socket } from './client';

export type Role = 'VIEWER' | 'SUPERVISOR' | 'ADMIN';

export interface User {
  id: string;
  email: string;
  role: Role;
  active: boolean;
}

export interface Session {
  user: User;
  expiresAt: string;
}

const HEADERS = { 'X-Devart-Csrf': '1' };

async function failure(response: Response): Promise<ApiError> {
  try {
    const body = (await response.json()) as { errors?: { message: string; extensions?: { code?: string } }[] };
    const first = body.errors?.[0];
    if (first) return new ApiError(first.message, first.extensions?.code ?? 'INTERNAL');
  } catch {
    // Not JSON: a proxy's or a server's page; say what the status says.
  }
  const code = response.status === 429 ? 'RATE_LIMITED' : response.status >= 500 ? 'UNAVAILABLE' : 'INTERNAL';
  return new ApiError(`devart answered ${response.status} ${response.statusText}`, code);
}

/// Who is signed in: the session, or `null` when there is none (401).
export async function currentSession(): Promise<Session | null> {
  if (hasDevelopmentToken()) return developmentSession();
  let response: Response;
  try {
    response = await fetch('/session', { headers: HEADERS, credentials: 'same-origin' });
  } catch {
    throw new ApiError('devart cannot be reached', 'UNAVAILABLE');
  }
  if (response.status === 401) return null;
  if (!response.ok) throw await failure(response);
  return (await response.json()) as Session;
}

export async function signIn(email: string, password: string): Promise<Session> {
  let response: Response;
  try {
    response = await fetch('/session', {
      method: 'POST',
      headers: { ...HEADERS, 'Content-Type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify({ email, password }),
    });
  } catch {
    throw new ApiError('devart cannot be reached', 'UNAVAILABLE');
  }
  if (!response.ok) throw await failure(response);
  return (await response.json()) as Session;
}

export async function signOut(): Promise<void> {
  let response: Response;
  try {
    response = await fetch('/session', { method: 'DELETE', headers: HEADERS, credentials: 'same-origin' });
  } catch {
    throw new ApiError('devart cannot be reached', 'UNAVAILABLE');
  }
  if (!response.ok && response.status !== 401) throw await failure(response);
}

/// Development only: who the development token belongs to, read with `me` over the socket.
async function developmentSession(): Promise<Session> {
  const { me } = await socket().request<{ me: { subject: string; role: Role; userId: string | null } }>(
    '{ me { subject role userId } }',
  );
  return {
    user: { id: me.userId ?? me.subject, email: me.subject, role: me.role, active: true },
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
  };
}
