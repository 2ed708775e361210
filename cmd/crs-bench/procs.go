package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process the driver started. stop kills it by its PID; the kernel also kills it
// if the driver dies first (Pdeathsig), so no benchmark leaves servers behind.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	stopped sync.Once
}

// procSpec says how to start a child.
type procSpec struct {
	name string
	bin  string
	args []string
	// env is added to the driver's environment.
	env []string
	// logPath receives the child's stderr, and its stdout after the line waitLine looks for.
	logPath string
	// waitLine, when set, is a stdout line prefix to wait for; its remainder is returned by startProc.
	waitLine string
	// waitTimeout bounds the wait for waitLine.
	waitTimeout time.Duration
}

// startProc starts spec and, if spec.waitLine is set, waits for it on stdout.
func startProc(ctx context.Context, spec procSpec) (*proc, string, error) {
	logf, err := os.Create(spec.logPath)
	if err != nil {
		return nil, "", fmt.Errorf("create %s log: %w", spec.name, err)
	}
	cmd := exec.Command(spec.bin, spec.args...)
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Stderr = logf
	cmd.Stdout = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// stdout is an *os.File pipe rather than cmd.StdoutPipe so that Wait returns when the child
	// exits, even if a grandchild still holds the pipe open.
	var stdoutR, stdoutW *os.File
	if spec.waitLine != "" {
		if stdoutR, stdoutW, err = os.Pipe(); err != nil {
			logf.Close()
			return nil, "", fmt.Errorf("%s stdout: %w", spec.name, err)
		}
		cmd.Stdout = stdoutW
	}
	err = cmd.Start()
	if stdoutW != nil {
		stdoutW.Close()
	}
	if err != nil {
		logf.Close()
		if stdoutR != nil {
			stdoutR.Close()
		}
		return nil, "", fmt.Errorf("start %s (%s): %w", spec.name, spec.bin, err)
	}
	p := &proc{name: spec.name, cmd: cmd, logPath: spec.logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	lines := make(chan string, 1)
	if stdoutR == nil {
		logf.Close() // the child has its own descriptor
	} else {
		go func() {
			defer logf.Close()
			defer stdoutR.Close()
			br := bufio.NewReader(stdoutR)
			for {
				line, err := br.ReadString('\n')
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), spec.waitLine); ok {
					lines <- strings.TrimSpace(rest)
					break
				}
				logf.WriteString(line)
				if err != nil {
					return
				}
			}
			io.Copy(logf, br) //nolint:errcheck // keeps the pipe drained while the child runs
		}()
	}
	if spec.waitLine == "" {
		return p, "", nil
	}
	timer := time.NewTimer(spec.waitTimeout)
	defer timer.Stop()
	select {
	case rest := <-lines:
		return p, rest, nil
	case <-p.done:
		return nil, "", fmt.Errorf("%s exited before printing %q: %v%s", spec.name, spec.waitLine, p.waitErr, p.logTail())
	case <-timer.C:
		p.stop()
		return nil, "", fmt.Errorf("%s did not print %q within %s%s", spec.name, spec.waitLine, spec.waitTimeout, p.logTail())
	case <-ctx.Done():
		p.stop()
		return nil, "", ctx.Err()
	}
}

// pid is the child's process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the child has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's PID, then SIGKILL after 5 seconds. Safe to call more than once.
func (p *proc) stop() {
	p.stopped.Do(func() {
		if p.exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// logTail returns the end of the child's log, prefixed for an error message.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Sprintf("\n--- %s log (%s) ---\n%s", p.name, p.logPath, bytes.TrimSpace(b))
}

// memory is a process's resident memory from /proc/<pid>/status, in bytes.
type memory struct {
	rss, hwm int64 // VmRSS now, VmHWM (peak RSS since start)
}

// readMemory reads VmRSS and VmHWM of pid.
func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memory{}, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	var m memory
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		f := strings.Fields(string(val)) // "12345 kB"
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				*dst = n << 10
			}
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("read memory of %d: no VmRSS", pid)
	}
	return m, nil
}

// rssSampler records the highest VmRSS of a process while it runs.
type rssSampler struct {
	peak int64 // written by the sampling goroutine, read after done closes
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := readMemory(pid); err == nil {
				s.peak = max(s.peak, m.rss)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the peak.
func (s *rssSampler) finish() int64 {
	close(s.stop)
	<-s.done
	return s.peak
}

// freePorts returns n distinct TCP ports that were free a moment ago. Another process could take one
// before the child binds it; on this machine that is rare enough.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// errExited reports a child that ended while the driver waited for it.
var errExited = errors.New("process exited")

// waitFor polls check every 100ms until it returns nil, p exits, timeout passes or ctx ends.
func waitFor(ctx context.Context, p *proc, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("waiting for %s: %s %w (%v)%s", what, p.name, errExited, p.waitErr, p.logTail())
		}
		if time.Now().After(deadline) {
			tail := ""
			if p != nil {
				tail = p.logTail()
			}
			return fmt.Errorf("waiting for %s: not ready after %s: %w%s", what, timeout, err, tail)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
