// The @nosana/api response and request types that hack/upstream/refresh-nosana-schemas.sh turns
// into JSON Schema (tests/contract/specs/nosana-api.generated.json).
import type { operations } from "@nosana/api/dist/client/schema.js";
type J<T> = T extends { 200: { content: { "application/json": infer B } } } ? B : never;
export type MarketList = J<operations["getApiMarkets"]["responses"]>;
export type JobByAddress = J<operations["getApiJobsByAddress"]["responses"]>;
export type JobsListRequest = operations["postApiJobsList"]["requestBody"]["content"]["application/json"];
export type JobsListResponse = J<operations["postApiJobsList"]["responses"]>;
export type JobStopResponse = J<operations["postApiJobsByAddressStop"]["responses"]>;
export type JobExtendRequest = operations["postApiJobsByAddressExtend"]["requestBody"]["content"]["application/json"];
export type JobExtendResponse = J<operations["postApiJobsByAddressExtend"]["responses"]>;
export type CreditsBalance = J<operations["getApiCreditsBalance"]["responses"]>;
