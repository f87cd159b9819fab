// The settings table of docs/configuration.md, made from the one list in src/config.ts.
import { SETTINGS } from '../config.ts';

export function settingsMarkdownTable(): string {
  const rows = SETTINGS.map((s) => `| \`${s.env}\` | ${s.help.replace(/\|/g, '\\|')} | ${s.default === '' ? 'unset' : `\`${s.default}\``} |`);
  return ['| env var | meaning | default |', '|---|---|---|', ...rows].join('\n');
}
