package relay

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// fakeRefresher hands out renewed accounts from fresh (nil: none came in time) and records what
// it was told.
type fakeRefresher struct {
	fresh map[string]*crsv1.Account
	mu    sync.Mutex
	calls []*crsv1.AccountEvent
}

func (f *fakeRefresher) Refreshed(acct *crsv1.Account, ev *crsv1.AccountEvent) *crsv1.Account {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ev)
	return f.fresh[acct.GetId()]
}

func (f *fakeRefresher) events() []*crsv1.AccountEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*crsv1.AccountEvent(nil), f.calls...)
}

// renewedAccount is a with a new access token and the next generation.
func renewedAccount(a *crsv1.Account, token string) *crsv1.Account {
	n := proto.Clone(a).(*crsv1.Account)
	n.GetOauth().AccessToken = token
	n.GetOauth().Generation = a.GetOauth().GetGeneration() + 1
	return n
}

// tokenGate answers 401 to the bearer tokens in refused and streams fullStream to the others.
func tokenGate(refused ...string) fasthttp.RequestHandler {
	ok := sseHandler(fullStream, 0, nil)
	return func(ctx *fasthttp.RequestCtx) {
		auth := string(ctx.Request.Header.Peek("Authorization"))
		for _, r := range refused {
			if auth == "Bearer "+r {
				errorHandler(401, anthropicErr("authentication_error", "invalid x-api-key"))(ctx)
				return
			}
		}
		ok(ctx)
	}
}

func tokensSeen(u *upstream) []string {
	var out []string
	for _, r := range u.requests() {
		out = append(out, strings.TrimPrefix(r.Header["authorization"], "Bearer "))
	}
	return out
}

// A 401 from an OAuth account hands the event to the Refresher (not to the outcome), and the
// account is retried once with the credential it returns; without one in time, or when the retry
// meets 401 again, the request fails over as before.
func TestRetryAfterUnauthorizedRefresh(t *testing.T) {
	for _, stream := range []bool{true, false} {
		body := unaryReq
		if stream {
			body = streamReq
		}
		t.Run(fmt.Sprintf("renewed: retried once on the same account/stream=%v", stream), func(t *testing.T) {
			up := newUpstream(t, tokenGate("tok-a"))
			a, b := official("a", up.URL), official("b", up.URL)
			ref := &fakeRefresher{fresh: map[string]*crsv1.Account{"a": renewedAccount(a, "tok-a2")}}
			f := newFrontRefresh(t, Options{}, ref, a, b)
			resp := f.post(t, "/v1/messages", body)
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, strings.Join(fullStream, ""), readAll(t, resp.Body))
			o := f.outcome(t)
			require.Equal(t, []string{"a:success"}, eventKinds(o), "the 401 went to the Refresher")
			require.Equal(t, 2, o.Attempts)
			require.Equal(t, "tok-a2", o.Account.GetOauth().GetAccessToken())
			require.Equal(t, []string{"tok-a", "tok-a2"}, tokensSeen(up), "b is never tried")
			evs := ref.events()
			require.Len(t, evs, 1)
			require.Equal(t, "a", evs[0].GetAccountId())
			require.Equal(t, "unauthorized", evs[0].GetKind())
			require.Equal(t, int32(401), evs[0].GetUpstreamStatus())
			require.Equal(t, "req-1", evs[0].GetRequestId())
			require.NotNil(t, evs[0].GetObservedAt())
		})
	}
	t.Run("no renewed credential: fails over", func(t *testing.T) {
		up := newUpstream(t, tokenGate("tok-a"))
		ref := &fakeRefresher{}
		f := newFrontRefresh(t, Options{}, ref, official("a", up.URL), official("b", up.URL))
		require.Equal(t, 200, f.post(t, "/v1/messages", unaryReq).StatusCode)
		o := f.outcome(t)
		require.Equal(t, []string{"b:success"}, eventKinds(o))
		require.Equal(t, 2, o.Attempts)
		require.Equal(t, []string{"tok-a", "tok-b"}, tokensSeen(up))
		require.Len(t, ref.events(), 1)
	})
	t.Run("renewed credential refused too: one retry only, then failover", func(t *testing.T) {
		up := newUpstream(t, tokenGate("tok-a", "tok-a2"))
		a := official("a", up.URL)
		ref := &fakeRefresher{fresh: map[string]*crsv1.Account{"a": renewedAccount(a, "tok-a2")}}
		f := newFrontRefresh(t, Options{MaxAttempts: 2}, ref, a, official("b", up.URL))
		require.Equal(t, 200, f.post(t, "/v1/messages", unaryReq).StatusCode)
		o := f.outcome(t)
		require.Equal(t, []string{"a:unauthorized", "b:success"}, eventKinds(o))
		require.Equal(t, 3, o.Attempts, "the retry does not use up a failover attempt")
		require.Equal(t, []string{"tok-a", "tok-a2", "tok-b"}, tokensSeen(up))
		require.Len(t, ref.events(), 1)
	})
	t.Run("only account, not renewed: the 401 passes through", func(t *testing.T) {
		up := newUpstream(t, tokenGate("tok-a"))
		ref := &fakeRefresher{}
		f := newFrontRefresh(t, Options{}, ref, official("a", up.URL))
		resp := f.post(t, "/v1/messages", unaryReq)
		require.Equal(t, 401, resp.StatusCode)
		o := f.outcome(t)
		require.Empty(t, o.Events, "the Refresher reported the 401")
		require.Len(t, ref.events(), 1)
	})
	t.Run("api key account: no refresh", func(t *testing.T) {
		up := newUpstream(t, errorHandler(401, anthropicErr("authentication_error", "invalid x-api-key")))
		ok := newUpstream(t, tokenGate())
		ref := &fakeRefresher{}
		f := newFrontRefresh(t, Options{}, ref, console("c", up.URL, "sk-ant-x", nil), official("b", ok.URL))
		require.Equal(t, 200, f.post(t, "/v1/messages", unaryReq).StatusCode)
		require.Equal(t, []string{"c:unauthorized", "b:success"}, eventKinds(f.outcome(t)))
		require.Empty(t, ref.events())
	})
}
