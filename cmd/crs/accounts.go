package main

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/crsrelay/crs/cmd/crs/internal/config"
	"github.com/crsrelay/crs/controlplane/admin"
	"github.com/crsrelay/crs/controlplane/notify"
	"github.com/crsrelay/crs/controlplane/oauth"
	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
)

// accountKeeping is what keeps accounts alive: OAuth flows, the token refresher, and
// notifications of account and key state changes.
type accountKeeping struct {
	flows     *oauth.Flows
	refresher *oauth.Refresher
	targets   *notify.TargetStore
	notifier  *notify.Notifier
	watcher   *notify.Watcher
}

// newAccountKeeping builds them over the store (which must also coordinate replicas: locks,
// OAuth sessions, config blobs; both backends do).
func newAccountKeeping(cfg config.Config, st store.Store, sealer *secret.Sealer, log *zap.Logger) (*accountKeeping, error) {
	coord, ok := st.(store.Coordinator)
	if !ok {
		return nil, fmt.Errorf("store %T cannot coordinate replicas (locks, OAuth sessions)", st)
	}
	providers := oauthProviders(cfg.OAuth)
	flows, err := oauth.NewFlows(oauth.FlowOptions{Providers: providers, Sessions: coord, Sealer: sealer})
	if err != nil {
		return nil, fmt.Errorf("oauth flows: %w", err)
	}
	refresher, err := oauth.NewRefresher(oauth.RefresherOptions{
		Store: st, Locks: coord, Sealer: sealer, Providers: providers, Logger: log.Named("oauth"),
		Margin: cfg.OAuth.RefreshMargin, Interval: cfg.OAuth.RefreshInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("oauth refresher: %w", err)
	}
	targets := notify.NewTargetStore(coord, sealer)
	notifier, err := notify.New(notify.Options{Targets: targets, Locks: coord, Logger: log.Named("notify")})
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	watcher, err := notify.NewWatcher(notify.WatcherOptions{
		Store: st, Notifier: notifier, Logger: log.Named("notify"), TZOffsetHours: cfg.Usage.TimezoneOffsetHours,
	})
	if err != nil {
		return nil, fmt.Errorf("notification watcher: %w", err)
	}
	return &accountKeeping{flows: flows, refresher: refresher, targets: targets, notifier: notifier, watcher: watcher}, nil
}

// adminOptions adds the OAuth and notification endpoints' dependencies to o.
func (k *accountKeeping) adminOptions(o admin.Options) admin.Options {
	o.OAuth, o.Refresher, o.Notifications, o.Notifier = k.flows, k.refresher, k.targets, k.notifier
	return o
}

// loops are the background loops to run for as long as the control plane serves.
func (k *accountKeeping) loops() map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"token refresher":      k.refresher.Run,
		"notifier":             k.notifier.Run,
		"notification watcher": k.watcher.Run,
	}
}

// oauthProviders applies the [oauth] overrides to the reference's defaults.
func oauthProviders(c config.OAuth) oauth.Providers {
	p := oauth.DefaultProviders()
	set := func(name string, authorize, token, client, secretValue, redirect string) {
		v, ok := p[name]
		if !ok {
			return
		}
		for _, f := range []struct {
			dst *string
			src string
		}{{&v.AuthorizeURL, authorize}, {&v.TokenURL, token}, {&v.ClientID, client}, {&v.ClientSecret, secretValue}, {&v.RedirectURI, redirect}} {
			if f.src != "" {
				*f.dst = f.src
			}
		}
		p[name] = v
	}
	for _, name := range []string{oauth.ProviderClaude, oauth.ProviderClaudeSetup} {
		set(name, c.ClaudeAuthorizeURL, c.ClaudeTokenURL, c.ClaudeClientID, "", c.ClaudeRedirectURI)
	}
	set(oauth.ProviderOpenAI, c.OpenAIAuthorizeURL, c.OpenAITokenURL, c.OpenAIClientID, "", c.OpenAIRedirectURI)
	set(oauth.ProviderGemini, c.GeminiAuthorizeURL, c.GeminiTokenURL, c.GeminiClientID, c.GeminiClientSecret.Value(), c.GeminiRedirectURI)
	return p
}

// isStop reports whether a background loop ended because the control plane is stopping.
func isStop(err error) bool { return err == nil || errors.Is(err, context.Canceled) }
