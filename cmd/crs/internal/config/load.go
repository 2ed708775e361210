package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// EnvPrefix starts every environment override; EnvConfigFile names the config file.
const (
	EnvPrefix     = "CRS_"
	EnvConfigFile = "CRS_CONFIG"
)

// Load builds the configuration of one subcommand (name is used in -h output): Default(), then the
// TOML file named by -config or CRS_CONFIG, then CRS_<SECTION>__<KEY> variables from environ
// ("KEY=value" strings, as os.Environ returns), then the flags in args. It does not Validate.
// -h returns flag.ErrHelp after printing usage to output.
func Load(name string, args, environ []string, output io.Writer) (Config, error) {
	cfg := Default()

	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	configPath := fs.String("config", "", "TOML config file (also "+EnvConfigFile+")")
	var (
		port      = fs.Int("port", 0, "client-facing worker port (server.port)")
		adminPort = fs.Int("admin-port", 0, "admin REST/health/metrics port (control.http_port)")
		grpcPort  = fs.Int("grpc-port", 0, "control-plane gRPC port (control.grpc_port)")
		dataDir   = fs.String("data-dir", "", "data directory (store.data_dir)")
		driver    = fs.String("store", "", "store driver: embedded or redis (store.driver)")
		logLevel  = fs.String("log-level", "", "debug, info, warn or error (log.level)")
		logFormat = fs.String("log-format", "", "console or json (log.format)")
	)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	env := envMap(environ)
	path := *configPath
	if path == "" {
		path = env[EnvConfigFile]
	}
	if path != "" {
		if err := loadFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	if err := applyEnv(&cfg, env); err != nil {
		return cfg, err
	}

	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "port":
			cfg.Server.Port = *port
		case "admin-port":
			cfg.Control.HTTPPort = *adminPort
		case "grpc-port":
			cfg.Control.GRPCPort = *grpcPort
		case "data-dir":
			cfg.Store.DataDir = *dataDir
		case "store":
			cfg.Store.Driver = *driver
		case "log-level":
			cfg.Log.Level = *logLevel
		case "log-format":
			cfg.Log.Format = *logFormat
		}
	})
	return cfg, nil
}

// loadFile decodes a TOML file over cfg; keys the Config does not have are an error (a typo would
// otherwise be silently ignored).
func loadFile(path string, cfg *Config) error {
	md, err := toml.DecodeFile(path, cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("config file %s: %s", path, pe.ErrorWithPosition())
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config file %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return nil
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// applyEnv sets every field whose CRS_<SECTION>__<KEY> variable is present. A CRS_ variable with
// "__" in its name that matches no key is an error, so a misspelt override does not go unnoticed.
func applyEnv(cfg *Config, env map[string]string) error {
	fields := map[string]reflect.Value{}
	collectFields(reflect.ValueOf(cfg).Elem(), EnvPrefix, fields)

	var errs []error
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasPrefix(name, EnvPrefix) || !strings.Contains(name, "__") {
			continue
		}
		f, ok := fields[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: no such setting", name))
			continue
		}
		if err := setFromString(f, env[name]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// collectFields maps env names to settable leaf fields, named by their toml tags joined with "__".
func collectFields(v reflect.Value, prefix string, out map[string]reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		name := prefix + strings.ToUpper(tag)
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			collectFields(fv, name+"__", out)
			continue
		}
		out[name] = fv
	}
}

var durationType = reflect.TypeFor[time.Duration]()

func setFromString(f reflect.Value, s string) error {
	if f.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration (like \"30s\"): %q", s)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		f.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		f.SetBool(b)
	case reflect.Float32, reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		f.SetFloat(x)
	default:
		return fmt.Errorf("unsupported setting type %s", f.Type())
	}
	return nil
}
