// Text that arrives with markup, shown safely: a document's Markdown, and a search excerpt's
// `<mark>`s. Both become elements built here, never HTML handed to the browser, so whatever the
// text holds (a `<script>`, an `onerror=`, a `javascript:` link) is shown as text.
//
// The Markdown is the common part of CommonMark and GitHub's: ATX headings, paragraphs, emphasis,
// strong, strikethrough, code spans, fenced and indented code, block quotes, lists (nested by
// indentation, with task boxes), pipe tables, rules, links and autolinks. Raw HTML stays text;
// images become links ("image: …"), so a page never loads anything from elsewhere.

import { h, type ComponentChildren } from 'preact';

/// Blocks nested deeper than this (quotes in lists in quotes…) are shown as text.
const DEPTH_MAX = 8;

type Block =
  | { kind: 'heading'; level: number; text: string }
  | { kind: 'paragraph'; text: string }
  | { kind: 'code'; lang: string; text: string }
  | { kind: 'quote'; blocks: Block[] }
  | { kind: 'list'; ordered: boolean; start: number; items: { blocks: Block[]; checked: boolean | null }[] }
  | { kind: 'table'; align: ('left' | 'center' | 'right' | null)[]; head: string[]; rows: string[][] }
  | { kind: 'rule' };

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])(\s+|$)/;
const TABLE_DIVIDER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const BLANK = /^\s*$/;

function startsBlock(line: string): boolean {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function cells(line: string): string[] {
  let row = line.trim();
  if (row.startsWith('|')) row = row.slice(1);
  if (row.endsWith('|') && !row.endsWith('\\|')) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, '|'));
}

/// Expands tabs to the next multiple of four columns, as Markdown counts indentation.
function untab(line: string): string {
  if (!line.includes('\t')) return line;
  let out = '';
  for (const c of line) out += c === '\t' ? ' '.repeat(4 - (out.length % 4)) : c;
  return out;
}

function parseBlocks(lines: string[], depth: number): Block[] {
  const blocks: Block[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (BLANK.test(line)) {
      i++;
      continue;
    }
    if (depth >= DEPTH_MAX) {
      blocks.push({ kind: 'code', lang: '', text: lines.slice(i).join('\n') });
      break;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const marker = fence[1];
      const body: string[] = [];
      i++;
      while (i < lines.length && !new RegExp(`^ {0,3}${marker[0] === '`' ? '`' : '~'}{${marker.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]);
        i++;
      }
      i++;
      blocks.push({ kind: 'code', lang: fence[2], text: body.join('\n') });
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      blocks.push({ kind: 'heading', level: heading[1].length, text: heading[2] ?? '' });
      i++;
      continue;
    }
    if (RULE.test(line)) {
      blocks.push({ kind: 'rule' });
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      const body: string[] = [];
      while (i < lines.length && !BLANK.test(lines[i]) && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        body.push(lines[i].replace(QUOTE, ''));
        i++;
      }
      blocks.push({ kind: 'quote', blocks: parseBlocks(body, depth + 1) });
      continue;
    }
    const item = ITEM.exec(line);
    if (item) {
      const ordered = /\d/.test(item[2]);
      const items: { blocks: Block[]; checked: boolean | null }[] = [];
      while (i < lines.length) {
        const next = ITEM.exec(lines[i]);
        if (!next || /\d/.test(next[2]) !== ordered) break;
        const indent = next[0].length === lines[i].length ? next[1].length + next[2].length + 1 : next[0].length;
        const body = [lines[i].slice(next[0].length)];
        i++;
        // The item goes on over lines indented to its text, and over a paragraph's lazy lines.
        while (i < lines.length) {
          const more = lines[i];
          if (BLANK.test(more)) {
            let next = i + 1;
            while (next < lines.length && BLANK.test(lines[next])) next++;
            const after = lines[next];
            if (after !== undefined && after.length - after.trimStart().length >= indent) {
              body.push('');
              i++;
              continue;
            }
            break;
          }
          const spaces = more.length - more.trimStart().length;
          if (spaces >= indent) body.push(more.slice(indent));
          else if (!startsBlock(more) && !BLANK.test(body[body.length - 1])) body.push(more.trimStart());
          else break;
          i++;
        }
        const box = /^\[([ xX])\]\s+/.exec(body[0]);
        if (box) body[0] = body[0].slice(box[0].length);
        items.push({ blocks: parseBlocks(body, depth + 1), checked: box ? box[1] !== ' ' : null });
        while (i < lines.length && BLANK.test(lines[i]) && ITEM.test(lines[i + 1] ?? '')) i++;
      }
      blocks.push({ kind: 'list', ordered, start: ordered ? Number.parseInt(item[2], 10) : 1, items });
      continue;
    }
    if (/^ {4}/.test(line)) {
      const body: string[] = [];
      while (i < lines.length && (/^ {4}/.test(lines[i]) || (BLANK.test(lines[i]) && /^ {4}/.test(lines[i + 1] ?? '')))) {
        body.push(lines[i].slice(4));
        i++;
      }
      blocks.push({ kind: 'code', lang: '', text: body.join('\n') });
      continue;
    }
    if (line.includes('|') && TABLE_DIVIDER.test(lines[i + 1] ?? '') && lines[i + 1].includes('-')) {
      const head = cells(line);
      const align = cells(lines[i + 1]).map((c) =>
        c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : c.startsWith(':') ? 'left' : null,
      );
      const rows: string[][] = [];
      i += 2;
      while (i < lines.length && !BLANK.test(lines[i]) && lines[i].includes('|')) {
        rows.push(cells(lines[i]));
        i++;
      }
      blocks.push({ kind: 'table', align, head, rows });
      continue;
    }
    const body: string[] = [];
    while (i < lines.length && !BLANK.test(lines[i]) && (body.length === 0 || !startsBlock(lines[i]))) {
      body.push(lines[i]);
      i++;
    }
    blocks.push({ kind: 'paragraph', text: body.join('\n') });
  }
  return blocks;
}

/// A link's address if it is one a page may follow: the web, mail, or this site.
export function safeHref(href: string): string | null {
  const url = href.trim();
  if (/^(https?:|mailto:)/i.test(url)) return url;
  // No scheme at all (`/tasks`, `#rollback`, `runbook.md`): relative to this page.
  if (!/^[a-z][a-z0-9+.-]*:/i.test(url) && !url.startsWith('//')) return url;
  return null;
}

// Every span is bounded, so a paragraph costs time in proportion to its length whatever it holds
// (a megabyte of unclosed asterisks included).
const INLINE = new RegExp(
  [
    /(`{1,16})([\s\S]{0,2000}?[^`])\1(?!`)/u, // 1, 2: a code span
    /(!?)\[((?:[^\]\\]|\\.){0,500})\]\(\s*<?([^\s)>]{0,2000})>?(?:\s+"[^"]{0,500}")?\s*\)/u, // 3, 4, 5: a link or an image
    /<((?:https?:\/\/|mailto:)[^\s>]{1,2000})>/u, // 6: an autolink
    /\*\*(?=\S)([\s\S]{0,1000}?\S)\*\*/u, // 7: strong
    /(?<![\p{L}\p{N}])__(?=\S)([\s\S]{0,1000}?\S)__(?![\p{L}\p{N}])/u, // 8: strong
    /\*(?=[^\s*])([\s\S]{0,1000}?[^\s*])\*/u, // 9: emphasis
    /(?<![\p{L}\p{N}_])_(?=[^\s_])([\s\S]{0,1000}?[^\s_])_(?![\p{L}\p{N}_])/u, // 10: emphasis
    /~~(?=\S)([\s\S]{0,1000}?\S)~~/u, // 11: strikethrough
    /\\([!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~])/u, // 12: an escaped character
    /( {2,}|\\)\n/u, // 13: a hard line break
    /(https?:\/\/[^\s<]{0,2000}[^\s<.,:;"')\]])/u, // 14: a bare address
  ]
    .map((r) => r.source)
    .join('|'),
  'gu',
);

/// A Markdown paragraph's text as elements.
export function inline(text: string, depth = 0): ComponentChildren[] {
  const out: ComponentChildren[] = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    const at = m.index ?? 0;
    if (at < last) continue;
    if (at > last) out.push(text.slice(last, at));
    last = at + m[0].length;
    const key = out.length;
    const inner = (s: string) => (depth < DEPTH_MAX ? inline(s, depth + 1) : [s]);
    if (m[2] !== undefined) out.push(<code key={key}>{m[2].replace(/^ (.*) $/s, '$1')}</code>);
    else if (m[4] !== undefined) {
      const href = safeHref(m[5]);
      const label = m[3] === '!' ? [m[4] || m[5]] : inner(m[4]);
      if (!href) out.push(<span key={key}>{label}</span>);
      else
        out.push(
          <a key={key} href={href} rel="noopener noreferrer" title={m[3] === '!' ? `Image: ${m[5]}` : undefined}>
            {m[3] === '!' && <span class="muted">image: </span>}
            {label}
          </a>,
        );
    } else if (m[6] !== undefined || m[14] !== undefined) {
      const href = m[6] ?? m[14];
      out.push(
        <a key={key} href={href} rel="noopener noreferrer">
          {href.replace(/^mailto:/, '')}
        </a>,
      );
    } else if (m[7] !== undefined || m[8] !== undefined) out.push(<strong key={key}>{inner(m[7] ?? m[8])}</strong>);
    else if (m[9] !== undefined || m[10] !== undefined) out.push(<em key={key}>{inner(m[9] ?? m[10])}</em>);
    else if (m[11] !== undefined) out.push(<del key={key}>{inner(m[11])}</del>);
    else if (m[12] !== undefined) out.push(m[12]);
    else if (m[13] !== undefined) out.push(<br key={key} />);
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/// Headings in a document sit under the page's own: `#` is shown as `<h3>` under "Content".
const HEADING_SHIFT = 2;

function renderBlocks(blocks: Block[], tight = false): ComponentChildren[] {
  return blocks.map((block, index) => {
    switch (block.kind) {
      case 'heading':
        return h(`h${Math.min(6, block.level + HEADING_SHIFT)}`, { key: index, class: `md-h md-h${block.level}` }, inline(block.text));
      case 'paragraph':
        return tight ? <span key={index}>{inline(block.text)}</span> : <p key={index}>{inline(block.text)}</p>;
      case 'code':
        return (
          <pre key={index} class="md-code" data-lang={block.lang || undefined} tabIndex={0}>
            <code>{block.text}</code>
          </pre>
        );
      case 'quote':
        return <blockquote key={index}>{renderBlocks(block.blocks)}</blockquote>;
      case 'rule':
        return <hr key={index} />;
      case 'list': {
        // A tight list (each item one paragraph) shows its items without paragraph spacing.
        const isTight = block.items.every((item) => item.blocks.length <= 1 || item.blocks[0].kind === 'paragraph');
        const items = block.items.map((item, n) => (
          <li key={n} class={item.checked === null ? undefined : 'md-task'}>
            {item.checked !== null && (
              <span class="md-box" role="img" aria-label={item.checked ? 'done' : 'not done'}>
                {item.checked ? '☑' : '☐'}{' '}
              </span>
            )}
            {renderBlocks(item.blocks, isTight)}
          </li>
        ));
        return block.ordered ? (
          <ol key={index} start={block.start === 1 ? undefined : block.start}>
            {items}
          </ol>
        ) : (
          <ul key={index}>{items}</ul>
        );
      }
      case 'table':
        return (
          <div key={index} class="table-wrap">
            <table class="table md-table">
              <thead>
                <tr>
                  {block.head.map((cell, n) => (
                    <th key={n} scope="col" class={block.align[n] ? `align-${block.align[n]}` : undefined}>
                      {inline(cell)}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {block.rows.map((row, r) => (
                  <tr key={r}>
                    {block.head.map((_, n) => (
                      <td key={n} class={block.align[n] ? `align-${block.align[n]}` : undefined}>
                        {inline(row[n] ?? '')}
                      </td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        );
    }
  });
}

/// Markdown shown as a document.
export function Markdown({ text, label }: { text: string; label?: string }) {
  const lines = text.replace(/\r\n?/g, '\n').split('\n').map(untab);
  return (
    <div class="markdown" aria-label={label}>
      {renderBlocks(parseBlocks(lines, 0))}
    </div>
  );
}

const ENTITIES: Record<string, string> = { '&lt;': '<', '&gt;': '>', '&amp;': '&', '&quot;': '"', '&#39;': "'" };

function unescape(html: string): string {
  return html.replace(/&(?:lt|gt|amp|quot|#39);/g, (entity) => ENTITIES[entity]);
}

/// A search excerpt: HTML-escaped text with `<mark>`…`</mark>` around the matches. Only the
/// marks become elements; the rest is unescaped into plain text, so nothing else in it can be
/// markup, whatever the server sent.
export function Excerpt({ html }: { html: string }) {
  const parts: ComponentChildren[] = [];
  let marked = false;
  html.split(/(<mark>|<\/mark>)/).forEach((part, index) => {
    if (part === '<mark>') marked = true;
    else if (part === '</mark>') marked = false;
    else if (part) parts.push(marked ? <mark key={index}>{unescape(part)}</mark> : unescape(part));
  });
  return <span class="excerpt">{parts}</span>;
}
