package fleet

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// fleetMetrics are the control plane's view of its workers, in Prometheus form on /metrics.
type fleetMetrics struct {
	workers          *metrics.Counter // Sync streams open now (Inc/Dec)
	recordsStored    *metrics.Counter
	recordsDuplicate *metrics.Counter
	costUSD          *metrics.FloatCounter
	ratedCostUSD     *metrics.FloatCounter
	// reclaims counts limits whose slot credit was reclaimed (credit.go).
	reclaims *metrics.Counter
	set      *metrics.Set
}

func newFleetMetrics(set *metrics.Set, s *Service) *fleetMetrics {
	if set == nil {
		set = metrics.NewSet()
	}
	m := &fleetMetrics{
		set:              set,
		workers:          set.NewCounter(`crs_fleet_workers_connected`),
		recordsStored:    set.NewCounter(`crs_usage_records_total{result="stored"}`),
		recordsDuplicate: set.NewCounter(`crs_usage_records_total{result="duplicate"}`),
		costUSD:          set.NewFloatCounter(`crs_usage_cost_usd_total`),
		ratedCostUSD:     set.NewFloatCounter(`crs_usage_rated_cost_usd_total`),
		reclaims:         set.NewCounter(`crs_admit_credit_reclaims_total`),
	}
	set.NewGauge(`crs_fleet_snapshot_version`, func() float64 { return float64(s.Version()) })
	return m
}

// accountEvent counts one reported account event by kind (unknown kinds as "other", so a
// misbehaving worker cannot grow the label set).
func (m *fleetMetrics) accountEvent(kind string) {
	switch kind {
	case EventRateLimited, EventOverloaded, EventUnauthorized, EventForbidden, EventBlocked, EventServerError, EventSuccess:
	default:
		kind = "other"
	}
	m.set.GetOrCreateCounter(fmt.Sprintf(`crs_account_events_total{kind=%q}`, kind)).Inc()
}
