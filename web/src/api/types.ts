// The API's shapes as the dashboard reads them (see schema.graphql), and the fields it asks for.

export type TaskStatus =
  | 'AWAITING_APPROVAL'
  | 'PENDING'
  | 'IN_PROGRESS'
  | 'COMPLETED'
  | 'FAILED'
  | 'CANCELLED'
  | 'REJECTED'
  | 'DELETED';

export const TASK_STATUSES: Exclude<TaskStatus, 'DELETED'>[] = [
  'AWAITING_APPROVAL',
  'PENDING',
  'IN_PROGRESS',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'REJECTED',
];

export const PRIORITIES = [5, 4, 3, 2, 1];

export interface Task {
  id: string;
  title: string;
  description: string;
  status: TaskStatus;
  priority: number;
  requiredCapabilities: string[];
  parentTaskId: string | null;
  version: number;
  createdAt: string;
  updatedAt: string;
  createdBy: string;
  maxAttempts: number;
  attempt: number;
  failures: number;
  runAfter: string | null;
  lease: { agentId: string; attempt: number; expiresAt: string } | null;
  progress: { message: string; percent: number | null } | null;
  workflowRunId: string | null;
  stageKey: string | null;
  costOutlier: { cost: string; acknowledged: boolean } | null;
  maxCost: string | null;
}

/// Every field of a task a card or a row shows.
export const TASK_FIELDS = `id title description status priority requiredCapabilities parentTaskId version
  createdAt updatedAt createdBy maxAttempts attempt failures runAfter
  lease { agentId attempt expiresAt } progress { message percent } workflowRunId stageKey
  costOutlier { cost acknowledged } maxCost`;

export type ApprovalStatus = 'PENDING' | 'APPROVED' | 'DENIED';

/// An agent's request for approval of a step in a task it holds, and its answer once given.
export interface ApprovalRequest {
  id: string;
  taskId: string;
  agentId: string;
  attempt: number;
  action: string;
  details: unknown;
  approveOnTimeout: boolean;
  expiresAt: string;
  status: ApprovalStatus;
  timedOut: boolean;
  note: string | null;
  requestedAt: string | null;
  decidedAt: string | null;
  /// `user:<id>`, or `system:approvals` when it ran out.
  decidedBy: string | null;
}

/// Every field of a request for approval (its task is asked for apart, where a list needs it).
export const APPROVAL_FIELDS = `id taskId agentId attempt action details approveOnTimeout expiresAt status timedOut note
  requestedAt decidedAt decidedBy`;

export interface Agent {
  id: string;
  name: string;
  capabilities: string[];
  active: boolean;
  keyId: string;
  version: number;
  registeredAt: string;
  updatedAt: string;
  lastSeenAt: string | null;
  currentTaskId: string | null;
  tasksClaimed: number;
  tasksCompleted: number;
  tasksFailed: number;
  /// Why the agent is quarantined, while it is.
  quarantined: string | null;
}

export const AGENT_FIELDS = `id name capabilities active keyId version registeredAt updatedAt lastSeenAt currentTaskId
  tasksClaimed tasksCompleted tasksFailed quarantined`;

export interface QueueStats {
  pending: number;
  due: number;
  byPriority: { priority: number; pending: number }[];
  byCapability: { capability: string; pending: number }[];
  oldestPendingAgeSeconds: number | null;
  inFlight: number;
  retrying: number;
  failed: number;
}

export const QUEUE_STATS_FIELDS = `pending due byPriority { priority pending } byCapability { capability pending }
  oldestPendingAgeSeconds inFlight retrying failed`;

export interface Service {
  id: string;
  name: string;
  currency: string;
  status: 'ACTIVE' | 'SUSPENDED' | 'INACTIVE';
  monthlyBudget: string;
  spent: string;
  reserved: string;
  remaining: string;
  period: string;
  thresholdsCrossed: number[];
  projectedRunOutAt: string | null;
  version: number;
}

export const SERVICE_FIELDS = `id name currency status monthlyBudget spent reserved remaining period thresholdsCrossed
  projectedRunOutAt version`;

export interface PageInfo {
  hasNextPage: boolean;
  endCursor: string | null;
}

export interface Connection<T> {
  edges: { cursor: string; node: T }[];
  pageInfo: PageInfo;
}

/// The order of the task board: newest first, then by id, as `tasks` pages.
export function newestFirst(a: Task, b: Task): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/// A document of the knowledge base as `document`, `documents` and `documentAt` answer it.
export interface KnowledgeDocument {
  id: string;
  title: string;
  /// Markdown.
  content: string;
  /// Lower case, sorted.
  tags: string[];
  /// Empty when nobody said.
  source: string;
  /// A JSON object.
  metadata: Record<string, unknown>;
  version: number;
  chunkCount: number;
  createdAt: string;
  createdBy: string;
  updatedAt: string;
  /// Whether semantic search finds it as it is now (meaningful for the latest version only).
  searchStatus: DocumentSearchStatus;
}

export type DocumentSearchStatus = 'SEARCHABLE' | 'EMBEDDING' | 'OTHER_MODEL' | 'KEYWORD_ONLY';

/// Every field of a document but its content and chunks: what a list shows.
export const DOCUMENT_SUMMARY_FIELDS = 'id title tags source version chunkCount createdAt createdBy updatedAt searchStatus';

export const DOCUMENT_FIELDS = `${DOCUMENT_SUMMARY_FIELDS} content metadata`;

/// A piece of a document's content, by headings and paragraphs.
export interface KnowledgeChunk {
  ordinal: number;
  /// The headings it sits under, joined by " › ".
  heading: string;
  text: string;
  charStart: number;
  charEnd: number;
}

export const CHUNK_FIELDS = 'ordinal heading text charStart charEnd';

export type SearchMode = 'HYBRID' | 'SEMANTIC' | 'KEYWORD';

export const SEARCH_MODES: SearchMode[] = ['HYBRID', 'SEMANTIC', 'KEYWORD'];

/// One search hit: a chunk of a document, its score and an excerpt (HTML: everything escaped
/// but the `<mark>`…`</mark>` around the matches).
export interface KnowledgeHit {
  document: { id: string; title: string; tags: string[]; source: string };
  chunk: KnowledgeChunk;
  score: number;
  excerpt: string;
}

export const HIT_FIELDS = `document { id title tags source } chunk { ${CHUNK_FIELDS} } score excerpt`;

/// Whether semantic search runs, with which model, and how far the embedding worker is.
export interface KnowledgeStatus {
  semantic: boolean;
  model: string | null;
  /// Why semantic search is off, and how to turn it on.
  reason: string | null;
  documents: number;
  chunks: number;
  embeddedChunks: number;
  /// Documents whose current version semantic search does not reflect yet.
  pendingDocuments: number;
}

export const KNOWLEDGE_STATUS_FIELDS = 'semantic model reason documents chunks embeddedChunks pendingDocuments';

/// The events of a document's stream (`document-<id>`).
export const DOCUMENT_EVENTS = ['DocumentAdded', 'DocumentUpdated', 'DocumentTagged', 'DocumentRemoved'];
