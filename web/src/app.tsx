// The shell: who is signed in, the header (navigation, connection, theme, the user and their
// role, sign-out), and the screen the address names.

import { useEffect, useState } from 'preact/hooks';
import { ApiError, closeSocket, socket, type Connection } from './api/client';
import { currentSession, signOut, type User } from './api/session';
import { atLeast, UserContext } from './auth';
import { match, navigate, onLinkClick, useLocation } from './router';
import { routes } from './routes';
import { SignIn } from './screens/signin';
import { ThemeToggle } from './theme';
import { ErrorNote, Loading, ReadOnlyNotice } from './ui/parts';

type SessionState = { kind: 'checking' } | { kind: 'out' } | { kind: 'in'; user: User } | { kind: 'failed'; error: ApiError };

const SIGN_IN = '/signin';

/// Where to come back to after signing in: the page asked for, never the sign-in page itself.
function returnTo(): string {
  const here = window.location.pathname + window.location.search;
  return window.location.pathname === SIGN_IN ? '/' : here;
}

function safeNext(next: string | null): string {
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith(SIGN_IN) ? next : '/';
}

export function App() {
  const location = useLocation();
  const [session, setSession] = useState<SessionState>({ kind: 'checking' });
  // A new socket (after a change of role) starts every screen over.
  const [generation, setGeneration] = useState(0);

  const check = async () => {
    try {
      const found = await currentSession();
      if (found) setSession({ kind: 'in', user: found.user });
      else {
        closeSocket();
        setSession({ kind: 'out' });
      }
      return found;
    } catch (error) {
      setSession({ kind: 'failed', error: error instanceof ApiError ? error : new ApiError(String(error), 'INTERNAL') });
      return null;
    }
  };

  useEffect(() => {
    void check();
  }, []);

  // The server ended the session, deactivated the user or changed their role: ask who we are.
  useEffect(() => {
    if (session.kind !== 'in') return;
    return socket().onEnded(async () => {
      const found = await check();
      if (found) {
        socket().restart();
        setGeneration((n) => n + 1);
      }
    });
  }, [session.kind, generation]);

  useEffect(() => {
    if (session.kind === 'out' && location.path !== SIGN_IN) {
      navigate(`${SIGN_IN}?next=${encodeURIComponent(returnTo())}`, true);
    }
  }, [session.kind, location.path]);

  if (session.kind === 'checking') return <Loading what="Signing in" />;
  if (session.kind === 'failed') {
    return (
      <main class="center">
        <ErrorNote error={session.error} context="Could not ask devart who is signed in" />
        <button type="button" onClick={() => void check()}>
          Try again
        </button>
      </main>
    );
  }
  if (session.kind === 'out') {
    return (
      <SignIn
        onSignedIn={(user) => {
          // The socket opens with the new session's cookie.
          closeSocket();
          setSession({ kind: 'in', user });
          navigate(safeNext(location.query.get('next')), true);
        }}
      />
    );
  }
  if (location.path === SIGN_IN) {
    navigate(safeNext(location.query.get('next')), true);
    return null;
  }

  const user = session.user;
  const onSignOut = async () => {
    try {
      await signOut();
    } finally {
      closeSocket();
      setSession({ kind: 'out' });
      navigate(SIGN_IN, true);
    }
  };

  return (
    <UserContext.Provider value={user}>
      <Shell user={user} path={location.path} onSignOut={onSignOut}>
        <Screen key={generation} path={location.path} query={location.query} user={user} />
      </Shell>
    </UserContext.Provider>
  );
}

function Screen({ path, query, user }: { path: string; query: URLSearchParams; user: User }) {
  for (const route of routes) {
    const params = match(route.path, path);
    if (!params) continue;
    if (route.role && !atLeast(user, route.role)) {
      return <ErrorNote error={new ApiError(`${route.title} is for ${route.role.toLowerCase()}s`, 'FORBIDDEN')} />;
    }
    document.title = `${route.title} · devart`;
    const View = route.view;
    return <View params={params} query={query} />;
  }
  document.title = 'Not found · devart';
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no page at <code>{path}</code>. <a href="/">Go to the overview</a>.
      </p>
    </section>
  );
}

function Shell({
  user,
  path,
  onSignOut,
  children,
}: {
  user: User;
  path: string;
  onSignOut: () => void;
  children: preact.ComponentChildren;
}) {
  const nav = routes.filter((route) => route.nav && (!route.role || atLeast(user, route.role)));
  const active = (route: string) => (route === '/' ? path === '/' : path === route || path.startsWith(`${route}/`));
  return (
    <div class="shell" onClick={onLinkClick}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/">
          devart
        </a>
        <nav aria-label="Screens">
          <ul>
            {nav.map((route) => (
              <li key={route.path}>
                <a href={route.path} aria-current={active(route.path) ? 'page' : undefined}>
                  {route.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <ConnectionState />
          <ThemeToggle />
          <span class="user" data-user>
            <span class="email" title={user.email}>
              {user.email}
            </span>{' '}
            <span class={`role role-${user.role.toLowerCase()}`}>{user.role.toLowerCase()}</span>
          </span>
          <button type="button" class="quiet" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      {user.role === 'VIEWER' && <ReadOnlyNotice />}
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}

const CONNECTION: Record<Connection, { sign: string; text: string }> = {
  connecting: { sign: '◌', text: 'Connecting' },
  connected: { sign: '●', text: 'Live' },
  reconnecting: { sign: '◍', text: 'Reconnecting' },
  ended: { sign: '○', text: 'Disconnected' },
};

function ConnectionState() {
  const [state, setState] = useState<Connection>(socket().connection);
  useEffect(() => {
    setState(socket().connection);
    return socket().onState(setState);
  }, []);
  const { sign, text } = CONNECTION[state];
  return (
    <span class={`connection connection-${state}`} role="status" data-connection={state}>
      <span aria-hidden="true">{sign}</span> {text}
    </span>
  );
}
