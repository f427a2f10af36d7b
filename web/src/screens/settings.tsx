// Settings: every live setting with its value, default and description; a supervisor changes one
// in place (checked here first against its default's kind, then by devart for its key), in effect
// in every process within a second. Live through `settingUpdates`, or the `SettingChanged` events.

import { useState } from 'preact/hooks';
import { gql, useLive, useMutation, useSoon } from '../api/live';
import { useCanSupervise } from '../auth';
import { Empty, ErrorNote, Loaded, PageHead } from '../ui/parts';
import { jsonText, parseJson } from './common';

interface Setting {
  key: string;
  value: unknown;
  default: unknown;
  description: string;
}

const SETTING_FIELDS = 'key value default description';

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'number') return Number.isInteger(value) ? 'a whole number' : 'a number';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

/// What is wrong with `text` as a value for a setting whose default is `fallback`, if anything.
export function checkSetting(text: string, fallback: unknown): { value?: unknown; error?: string } {
  const parsed = parseJson(text, undefined);
  if (!parsed.ok) return { error: parsed.error };
  if (parsed.value === undefined) return { error: 'Give a value (JSON).' };
  const want = kindOf(fallback);
  const have = kindOf(parsed.value);
  const numbers = typeof fallback === 'number' && typeof parsed.value === 'number';
  if (numbers && want === 'a whole number' && !Number.isInteger(parsed.value)) return { error: 'Give a whole number.' };
  if (!numbers && want !== have) return { error: `Give ${want} (JSON), like the default; this is ${have}.` };
  return { value: parsed.value };
}

export function Settings() {
  const canSupervise = useCanSupervise();
  const [settings, setSettings] = useState<Setting[] | null>(null);
  const readAll = async () => {
    setSettings((await gql<{ settings: Setting[] }>(`{ settings { ${SETTING_FIELDS} } }`)).settings);
  };
  const readSoon = useSoon(readAll);
  const live = useLive(
    [
      {
        query: `subscription SettingsLive { settingUpdates { ${SETTING_FIELDS} } }`,
        next: (data) => setSettings(data.settingUpdates),
        error: () => {},
      },
      {
        // Where `settingUpdates` is not served: each change is a `SettingChanged` event.
        query: `subscription SettingsChanged { events(types: ["SettingChanged"]) { position } }`,
        next: () => readSoon(),
      },
    ],
    readAll,
    [],
  );
  const rows = [...(settings ?? [])].sort((a, b) => a.key.localeCompare(b.key));
  return (
    <section class="settings">
      <PageHead title="Settings" />
      <p class="muted">Changes apply to every running devart process within a second and are kept as events.</p>
      <Loaded loading={live.loading} error={live.error} hasData={settings !== null}>
        {live.liveError && <p class="notice">Live updates stopped: {live.liveError.message}</p>}
        {rows.length === 0 ? (
          <Empty>No setting.</Empty>
        ) : (
          <div class="card">
            {rows.map((setting) => (
              <SettingRow key={setting.key} setting={setting} canSupervise={canSupervise} onSaved={setSettings} />
            ))}
          </div>
        )}
      </Loaded>
    </section>
  );
}

function SettingRow({
  setting,
  canSupervise,
  onSaved,
}: {
  setting: Setting;
  canSupervise: boolean;
  onSaved: (settings: Setting[]) => void;
}) {
  const current = jsonText(setting.value);
  const [text, setText] = useState<string | null>(null);
  const shown = text ?? current;
  const check = checkSetting(shown, setting.default);
  const dirty = text !== null && text !== current;
  const save = useMutation(async (value: unknown) => {
    const data = await gql<{ updateSetting: Setting[] }>(
      `mutation UpdateSetting($key: String!, $value: JSON!) { updateSetting(key: $key, value: $value) { ${SETTING_FIELDS} } }`,
      { key: setting.key, value },
    );
    onSaved(data.updateSetting);
    setText(null);
  });
  const id = `setting-${setting.key.replace(/[^A-Za-z0-9_-]/g, '-')}`;
  const isDefault = current === jsonText(setting.default);
  return (
    <div class="setting-row" data-setting={setting.key}>
      <div>
        <label for={id}>
          <code>
            <strong>{setting.key}</strong>
          </code>
        </label>{' '}
        {isDefault ? <span class="muted">(default)</span> : <span class="tone-info">◆ changed from the default</span>}
      </div>
      <p class="muted" id={`${id}-about`}>
        {setting.description}
      </p>
      <div class="muted">
        Default: <code>{jsonText(setting.default)}</code>
      </div>
      {canSupervise ? (
        <form
          class="setting-edit"
          onSubmit={(event) => {
            event.preventDefault();
            if (check.error === undefined) void save.run(check.value);
          }}
        >
          <input
            id={id}
            value={shown}
            aria-describedby={`${id}-about ${id}-error`}
            aria-invalid={check.error ? 'true' : undefined}
            onInput={(event) => {
              setText(event.currentTarget.value);
              save.clear();
            }}
          />
          <button type="submit" class="primary" disabled={!dirty || !!check.error || save.running}>
            Save
          </button>
          {dirty && (
            <button type="button" onClick={() => setText(null)}>
              Undo
            </button>
          )}
          {!isDefault && (
            <button type="button" disabled={save.running} onClick={() => setText(jsonText(setting.default))}>
              Default
            </button>
          )}
          <span id={`${id}-error`} class="field-error" role={check.error ? 'alert' : undefined}>
            {dirty ? check.error ?? '' : ''}
          </span>
        </form>
      ) : (
        <div>
          Value: <code id={id}>{current}</code>
        </div>
      )}
      <ErrorNote error={save.error} context="Not changed" />
    </div>
  );
}
