// Small parts every screen uses: times, statuses (always with a word and a sign, never colour
// alone), loading, empty and error states, the viewer's notice, dialogs (a confirmation among
// them) and secrets shown once.

import type { ComponentChildren } from 'preact';
import { useEffect, useId, useRef, useState } from 'preact/hooks';
import type { ApiError } from '../api/client';
import { useMutation } from '../api/live';
import { formatDateTime, formatUtc } from './format';

/// A moment in the viewer's zone, UTC on hover.
export function Time({ at, fallback = '—' }: { at: string | null | undefined; fallback?: string }) {
  if (!at) return <span>{fallback}</span>;
  return (
    <time dateTime={at} title={formatUtc(at)}>
      {formatDateTime(at)}
    </time>
  );
}

/// The sign and tone of each status; the word is always shown beside it.
const STATUS: Record<string, { sign: string; tone: string }> = {
  AWAITING_APPROVAL: { sign: '⧗', tone: 'warn' },
  PENDING: { sign: '○', tone: 'neutral' },
  WAITING: { sign: '◌', tone: 'neutral' },
  IN_PROGRESS: { sign: '◐', tone: 'info' },
  RUNNING: { sign: '◐', tone: 'info' },
  COMPLETED: { sign: '✓', tone: 'good' },
  ACTIVE: { sign: '✓', tone: 'good' },
  FAILED: { sign: '✕', tone: 'bad' },
  SUSPENDED: { sign: '‖', tone: 'bad' },
  CANCELLED: { sign: '⊘', tone: 'muted' },
  REJECTED: { sign: '⊗', tone: 'bad' },
  SKIPPED: { sign: '↷', tone: 'muted' },
  INACTIVE: { sign: '⊘', tone: 'muted' },
  DELETED: { sign: '✕', tone: 'muted' },
  APPROVED: { sign: '✓', tone: 'good' },
  DENIED: { sign: '⊗', tone: 'bad' },
  // Whether semantic search finds a document.
  SEARCHABLE: { sign: '✓', tone: 'good' },
  EMBEDDING: { sign: '◐', tone: 'info' },
  OTHER_MODEL: { sign: '↻', tone: 'warn' },
  KEYWORD_ONLY: { sign: '○', tone: 'muted' },
};

export function statusLabel(status: string): string {
  return status.charAt(0) + status.slice(1).toLowerCase().replace(/_/g, ' ');
}

export function Status({ status, title }: { status: string; title?: string }) {
  const { sign, tone } = STATUS[status] ?? { sign: '•', tone: 'neutral' };
  return (
    <span class={`status tone-${tone}`} title={title}>
      <span aria-hidden="true">{sign}</span> {statusLabel(status)}
    </span>
  );
}

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" /> {what}…
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

/// The API's message and its code, as a page or a form reports it.
export function ErrorNote({ error, context }: { error: ApiError | null; context?: string }) {
  if (!error) return null;
  return (
    <div class="error-note" role="alert">
      <span aria-hidden="true">⚠</span> {context ? `${context}: ` : ''}
      {error.message} <code class="code">{error.code}</code>
    </div>
  );
}

/// Loading, then an error, then the content: the states of a screen's main read.
export function Loaded({
  loading,
  error,
  hasData,
  children,
}: {
  loading: boolean;
  error: ApiError | null;
  hasData: boolean;
  children: ComponentChildren;
}) {
  if (error && !hasData) return <ErrorNote error={error} />;
  if (loading && !hasData) return <Loading />;
  return (
    <>
      {error && <ErrorNote error={error} context="Could not refresh" />}
      {children}
    </>
  );
}

export function ReadOnlyNotice() {
  return (
    <p class="notice" role="note">
      <span aria-hidden="true">ⓘ</span> You are signed in as a viewer: you can read everything here and change nothing.
    </p>
  );
}

/// A modal dialog (the browser's own: focus stays inside, Escape closes it).
export function Dialog({
  title,
  onClose,
  children,
}: {
  title: string;
  onClose: () => void;
  children: ComponentChildren;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.close();
  }, []);
  return (
    <dialog ref={ref} class="dialog" aria-labelledby={titleId} onClose={onClose}>
      <div class="dialog-head">
        <h2 id={titleId}>{title}</h2>
        <button type="button" class="icon" aria-label="Close" onClick={onClose}>
          ✕
        </button>
      </div>
      {children}
    </dialog>
  );
}

/// Asks before doing something: the question, a text to go with it if `text` says (a reason, a
/// note; required or not), and the button that does it. `run` gets the trimmed text (`null` when
/// empty); the dialog closes with `onDone(true)` once it succeeds and shows its error otherwise.
export function Confirm({
  title,
  children,
  text,
  confirm,
  danger = false,
  run,
  onDone,
}: {
  title: string;
  children: ComponentChildren;
  text?: { label: string; hint: string; required?: boolean };
  confirm: string;
  danger?: boolean;
  run: (text: string | null) => Promise<unknown>;
  onDone: (done: boolean) => void;
}) {
  const [value, setValue] = useState('');
  const act = useMutation(() => run(value.trim() || null));
  const missing = !!text?.required && !value.trim();
  const submit = async (event: Event) => {
    event.preventDefault();
    if (missing) return;
    // `run` answers something on success (a mutation's data), `undefined` once it failed.
    if ((await act.run()) !== undefined) onDone(true);
  };
  return (
    <Dialog title={title} onClose={() => onDone(false)}>
      <form class="form" onSubmit={submit}>
        <p>{children}</p>
        {text && (
          <Field label={text.label} hint={text.hint}>
            <input required={text.required} value={value} onInput={(e) => setValue(e.currentTarget.value)} />
          </Field>
        )}
        <ErrorNote error={act.error} context="Not done" />
        <div class="buttons">
          <button type="submit" class={danger ? 'danger' : 'primary'} disabled={act.running || missing}>
            {confirm}
          </button>
          <button type="button" onClick={() => onDone(false)}>
            Keep it
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/// The time now, again every `everyMs` while `ticking`: for a countdown.
export function useNow(everyMs = 1000, ticking = true): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!ticking) return;
    setNow(Date.now());
    const timer = window.setInterval(() => setNow(Date.now()), everyMs);
    return () => window.clearInterval(timer);
  }, [everyMs, ticking]);
  return now;
}

/// A secret shown this once (an API key, a password), with a copy button.
export function ShownOnce({ label, secret }: { label: string; secret: string }) {
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no');
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      setCopied('yes');
    } catch {
      setCopied('failed');
    }
  };
  return (
    <div class="shown-once">
      <p>
        <strong>{label}</strong> — shown this once. Store it safely now: devart cannot show it again.
      </p>
      <div class="secret-row">
        <code class="secret" data-secret>
          {secret}
        </code>
        <button type="button" onClick={copy}>
          Copy
        </button>
      </div>
      <p class="hint" role="status">
        {copied === 'yes' ? '✓ Copied to the clipboard.' : copied === 'failed' ? 'Copying failed: select the text and copy it.' : ''}
      </p>
    </div>
  );
}

/// A labelled form field with its hint and inline error.
export function Field({
  label,
  hint,
  error,
  children,
}: {
  label: string;
  hint?: string;
  error?: string | null;
  children: ComponentChildren;
}) {
  return (
    <label class="field">
      <span class="label">{label}</span>
      {children}
      {hint && <span class="hint">{hint}</span>}
      {error && (
        <span class="field-error" role="alert">
          {error}
        </span>
      )}
    </label>
  );
}

export function PageHead({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="page-head">
      <h1>{title}</h1>
      {children && <div class="actions">{children}</div>}
    </div>
  );
}
