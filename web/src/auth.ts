// Who is signed in, for every screen: their role decides which controls exist at all (a viewer
// sees none that write; the server refuses them anyway).

import { createContext } from 'preact';
import { useContext } from 'preact/hooks';
import type { Role, User } from './api/session';

export const UserContext = createContext<User | null>(null);

const RANK: Record<Role, number> = { VIEWER: 0, SUPERVISOR: 1, ADMIN: 2 };

/// The signed-in user; screens render only inside a session.
export function useUser(): User {
  const user = useContext(UserContext);
  if (!user) throw new Error('no user signed in');
  return user;
}

/// Whether `user` has `role` or a higher one.
export function atLeast(user: User, role: Role): boolean {
  return RANK[user.role] >= RANK[role];
}

/// Supervisors and admins run the work; viewers read.
export function useCanSupervise(): boolean {
  return atLeast(useUser(), 'SUPERVISOR');
}

export function useIsAdmin(): boolean {
  return atLeast(useUser(), 'ADMIN');
}
