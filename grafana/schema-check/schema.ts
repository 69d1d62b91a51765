/**
 * Schema-derived types the dashboard checks use (see check.ts and literal-check.mjs).
 */

/** The schema as a JSON import can express it: literal and enum types widened. */
export type Widen<S> = S extends string
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
export type Exact<T, S> = unknown extends S
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

/**
 * The schema with every string enum replaced by the union of its values: a JSON object
 * literal written in TypeScript keeps its literal types, so `"palette-classic"` can be
 * checked against `FieldColorModeId`'s values (a literal is never assignable to an enum
 * type itself). Numeric enums accept their number literals as they are.
 */
export type Literal<S> = S extends string
  ? `${S}`
  : S extends readonly (infer E)[]
    ? Literal<E>[]
    : S extends object
      ? { [K in keyof S]: Literal<S[K]> }
      : S;

/**
 * Options and `fieldConfig.defaults.custom` of each panel type the dashboard uses, from
 * the panel plugins' published schemas. The Dashboard type leaves both free-form.
 */
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as Heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';

export interface PanelSchemas {
  timeseries: { options: TimeSeries.Options; custom: TimeSeries.FieldConfig };
  stat: { options: Stat.Options; custom: Record<string, never> };
  heatmap: { options: Heatmap.Options; custom: Heatmap.FieldConfig };
  table: { options: Table.Options; custom: Table.FieldConfig };
}
