/**
 * Type-checks the generated dashboard against Grafana's published schema, part 1 of 2.
 *
 * `npm run check` first writes generated/literals.ts (literal-check.mjs: the dashboard as
 * a TypeScript object literal, whose enum values are checked against the schema's, and
 * each panel's options against its panel plugin's schema), then compiles both files with
 * `tsc --noEmit`. This file imports the committed dashboard JSON
 * and assigns it to `@grafana/schema`'s `Dashboard` type. Two details make that strict
 * enough to mean something:
 *
 * - A JSON import has *widened* types: `"row"` is typed `string`, `2` is typed `number`.
 *   The schema uses string enums and literal unions (`type: 'row'`, `mode: 'absolute'`),
 *   which a widened value can never satisfy, so `Widen` relaxes the schema the same way:
 *   literals and enums become their base type; structure, required properties and value
 *   types stay. (The literal values are part 2's job.)
 * - Assigning an imported (non-fresh) object skips TypeScript's excess-property check,
 *   so a misspelled key (`gridpos`, `fieldConfig.defaults.units`) would pass silently.
 *   `Exact` maps every key the schema does not know to `never`, at every depth, while
 *   free-form parts of the schema (`options`, `targets`, `custom`: `Record<string,
 *   unknown>`) accept anything.
 */
import type { Dashboard } from '@grafana/schema';
import dashboard from '../dashboards/sqlalchemy-pools.json';
import type { Exact } from './schema';

export const checked: Exact<typeof dashboard, Dashboard> = dashboard;
