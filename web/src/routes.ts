// Every screen of the dashboard: its address, its name in the navigation, who may open it. To add a
// screen, add its line here (in the order the navigation shows them).

import type { ComponentType } from 'preact';
import type { Role } from './api/session';
import { Agents } from './screens/agents';
import { AnalyticsScreen } from './screens/analytics';
import { Audit } from './screens/audit';
import { Board } from './screens/board';
import { Budgets } from './screens/budgets';
import { DocumentPage } from './screens/document';
import { Knowledge } from './screens/knowledge';
import { Outliers } from './screens/outliers';
import { Overview } from './screens/overview';
import { People } from './screens/people';
import { Settings } from './screens/settings';
import { Workflows } from './screens/workflows';
import { TaskPage } from './screens/task';

export interface ScreenProps {
  /// The `:params` of the route's path.
  params: Record<string, string>;
  /// The query string: where screens keep their filters.
  query: URLSearchParams;
}

export interface Route {
  path: string;
  title: string;
  /// Shown in the navigation.
  nav?: boolean;
  /// The least role that may open it.
  role?: Role;
  view: ComponentType<ScreenProps>;
}

export const routes: Route[] = [
  { path: '/', title: 'Overview', nav: true, view: Overview },
  { path: '/tasks', title: 'Tasks', nav: true, view: Board },
  { path: '/tasks/:id', title: 'Task', view: TaskPage },
  { path: '/agents', title: 'Agents', nav: true, view: Agents },
  { path: '/workflows', title: 'Workflows', nav: true, view: Workflows },
  { path: '/knowledge', title: 'Knowledge', nav: true, view: Knowledge },
  { path: '/knowledge/:id', title: 'Document', view: DocumentPage },
  { path: '/budgets', title: 'Budgets', nav: true, view: Budgets },
  { path: '/analytics', title: 'Analytics', nav: true, view: AnalyticsScreen },
  { path: '/outliers', title: 'Outliers', nav: true, view: Outliers },
  { path: '/settings', title: 'Settings', nav: true, view: Settings },
  { path: '/audit', title: 'Audit', nav: true, view: Audit },
  { path: '/people', title: 'People', nav: true, role: 'ADMIN', view: People },
];
