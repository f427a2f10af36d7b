// Numbers, money and times for people: in the viewer's locale and time zone.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const number = new Intl.NumberFormat();

export function formatDateTime(at: string | Date): string {
  return dateTime.format(typeof at === 'string' ? new Date(at) : at);
}

/// The same moment in UTC, for the `title` of a time.
export function formatUtc(at: string | Date): string {
  return (typeof at === 'string' ? new Date(at) : at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

export function formatNumber(value: number): string {
  return number.format(value);
}

/// A `Decimal` string as money: its digits as the API gives them, grouped, never through a float.
export function formatMoney(amount: string, currency = 'USD'): string {
  const negative = amount.startsWith('-');
  const [whole, fraction = ''] = (negative ? amount.slice(1) : amount).split('.');
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const cents = (fraction + '00').slice(0, Math.max(2, fraction.replace(/0+$/, '').length));
  return `${negative ? '−' : ''}${grouped}.${cents}${currency ? ` ${currency}` : ''}`;
}

/// How long ago `at` was, roughly: "3 min", "2 h", "5 d".
export function formatAge(at: string, now = Date.now()): string {
  return formatSeconds((now - new Date(at).getTime()) / 1000);
}

export function formatSeconds(seconds: number): string {
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86_400) return `${(s / 3600).toFixed(s < 36_000 ? 1 : 0)} h`;
  return `${(s / 86_400).toFixed(s < 864_000 ? 1 : 0)} d`;
}

export function formatPercent(rate: number | null | undefined): string {
  return rate === null || rate === undefined ? '—' : `${(rate * 100).toFixed(rate >= 0.995 || rate === 0 ? 0 : 1)} %`;
}

/// Adds `Decimal` strings exactly, in millionths (the API's six decimals).
export function addDecimals(amounts: string[]): string {
  let total = 0n;
  for (const amount of amounts) total += toMicros(amount);
  return fromMicros(total);
}

export function toMicros(amount: string): bigint {
  const negative = amount.startsWith('-');
  const [whole, fraction = ''] = (negative ? amount.slice(1) : amount).split('.');
  const micros = BigInt(whole || '0') * 1_000_000n + BigInt((fraction + '000000').slice(0, 6));
  return negative ? -micros : micros;
}

export function fromMicros(micros: bigint): string {
  const negative = micros < 0n;
  const value = negative ? -micros : micros;
  const fraction = (value % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${value / 1_000_000n}${fraction ? `.${fraction}` : ''}`;
}

/// A decimal amount as the API takes it: digits, then at most six decimals (`12.50`).
export function isAmount(text: string): boolean {
  return /^\d+(\.\d{1,6})?$/.test(text);
}
