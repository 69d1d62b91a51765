/**
 * Type-checks the generated dashboard against Grafana's published schema.
 *
 * `npx tsc --noEmit -p .` compiles this file, which imports the committed dashboard JSON
 * and assigns it to `@grafana/schema`'s `Dashboard` type. Two details make that check
 * strict enough to mean something:
 *
 * - A JSON import has *widened* types: `"row"` is typed `string`, `2` is typed `number`.
 *   The schema uses string enums and literal unions (`type: 'row'`, `mode: 'absolute'`),
 *   which a widened value can never satisfy, so `Widen` relaxes the schema the same way:
 *   literals and enums become their base type; structure, required properties and value
 *   types stay.
 * - Assigning an imported (non-fresh) object skips TypeScript's excess-property check,
 *   so a misspelled key (`gridpos`, `fieldconfig.defaults.units`) would pass silently.
 *   `Exact` maps every key the schema does not know to `never`, at every depth, while
 *   free-form parts of the schema (`options`, `targets`, `custom`: `Record<string,
 *   unknown>`) accept anything.
 */
import type { Dashboard } from '@grafana/schema';
import dashboard from '../dashboards/sqlalchemy-pools.json';

/** The schema as a JSON import can express it: literal and enum types widened. */
type Widen<S> = S extends string
  ? string
  : S extends number
    ? number
    : S extends boolean
      ? boolean
      : S extends readonly (infer E)[]
        ? Widen<E>[]
        : S extends object
          ? { [K in keyof S]: Widen<S[K]> }
          : S;

/**
 * `T` checked against schema `S` at every depth: keys unknown to `S` become `never`, and
 * each object must also be a `Widen<S>` (required keys present, values of the right
 * type). Distributes over the members of a union schema (`Panel | RowPanel`: a panel must
 * fit one of them) and over the element shapes of a JSON array. TypeScript gives each
 * element of a mixed array the other elements' keys as optional `undefined` properties;
 * those are not real keys and pass.
 */
type Exact<T, S> = unknown extends S
  ? T
  : T extends readonly (infer E)[]
    ? S extends readonly (infer SE)[]
      ? Exact<E, SE>[]
      : never
    : T extends object
      ? ExactObject<T, Extract<S, object>>
      : T;

type ExactObject<T, S> = S extends object
  ? {
      [K in keyof T]: K extends keyof S
        ? Exact<T[K], S[K]>
        : T[K] extends undefined
          ? T[K]
          : never;
    } & Widen<S>
  : never;

export const checked: Exact<typeof dashboard, Dashboard> = dashboard;
