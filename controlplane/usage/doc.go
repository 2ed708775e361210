// Package usage turns what workers report into what the store aggregates: the cost of a usage
// record at list price and after service rates, labelled with its periods (internal/period, in the
// configured time zone), as the store.UsageEntry that store.RecordUsage adds to every aggregate.
//
// It depends on the store interface, the pricing table, internal/period and the contract's
// generated types; it knows nothing of gRPC or the data plane.
package usage
