using System.CommandLine;
using System.Globalization;
using Gill.ML.World;
using Gill.ML.World.Pretraining;
using Spectre.Console;

namespace Gill.ML.Cli.Commands;

/// <summary><c>gill world pretrain [--cache DIR] [--seed N] [--images N] [--steps-scale F] [--quick]</c>.</summary>
internal sealed class WorldPretrainSubcommand : IWorldSubcommand
{
    private static readonly string[] Phases = ["world", "lm", "clip", "classifier", "generator"];

    public Command Build()
    {
        var cache = new Option<string?>("--cache") { Description = "Cache folder for the world and every checkpoint [default: ~/.cache/gill/world-<hash of the options>]" };
        var seed = new Option<int>("--seed") { Description = "Seed of the world and of every training run", DefaultValueFactory = _ => 0 };
        var images = new Option<int?>("--images") { Description = "Captioned training images of the world [default: 20000; 4000 with --quick]" };
        var scale = new Option<double?>("--steps-scale") { Description = "Multiplies every phase's training steps [default: 1; 0.25 with --quick]" };
        var quick = new Option<bool>("--quick") { Description = "A smaller world and a quarter of the steps (a few minutes; lower figures)" };
        var threads = new Option<int>("--threads") { Description = "torch CPU threads (0: libtorch's default; 1 is the robust choice on a shared machine)", DefaultValueFactory = _ => 1 };
        var inProcess = new Option<bool>("--in-process") { Description = "Train the language model in this process before the other phases (by default, on machines with two or more cores, a child process trains it beside them; the checkpoint is the same)" };
        var optionsFile = new Option<string?>("--options-file") { Description = "Read every pretraining option from this JSON file (WorldPretrainOptions.ToJson); the other option flags are ignored", Hidden = true };
        var progressJson = new Option<bool>("--progress-json") { Description = "Print each progress report as one JSON line instead of progress bars (for a parent process)", Hidden = true };
        var cmd = new Command("pretrain", "Pretrain the shapes world's own backbones (OPT language model, CLIP text tower + CNN image tower, text-to-image decoder, attribute classifier), cached with SHA-256 manifests");
        foreach (var o in new Option[] { cache, seed, images, scale, quick, threads, inProcess, optionsFile, progressJson }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            if (parse.GetValue(optionsFile) is { } file) return Task.FromResult(ExecuteFromFile(file, parse.GetValue(progressJson), ct));
            return Task.FromResult(Execute(parse.GetValue(cache), parse.GetValue(seed), parse.GetValue(images), parse.GetValue(scale), parse.GetValue(quick), parse.GetValue(threads), parse.GetValue(inProcess), ct));
        });
        return cmd;
    }

    /// <summary>
    /// The language-model host of this CLI: a child <c>gill world pretrain</c> (the same executable, or <c>dotnet</c>
    /// with this dll) on machines with two or more cores; null (train in process) otherwise.
    /// </summary>
    internal static WorldLanguageModelHost? ChildProcessHost()
    {
        if (Environment.ProcessorCount < 2 || Environment.ProcessPath is not { } exe) return null;
        var args = new List<string>();
        var dll = typeof(WorldPretrainSubcommand).Assembly.Location;
        if (Path.GetFileNameWithoutExtension(exe).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            if (string.IsNullOrEmpty(dll)) return null;
            args.Add(dll);
        }
        args.AddRange(["world", "pretrain"]);
        return WorldPretrainer.ChildProcessHost(exe, args);
    }

    /// <summary>Runs the phases described by an options file (the child side of <see cref="ChildProcessHost"/>).</summary>
    private static int ExecuteFromFile(string file, bool progressJson, CancellationToken ct)
    {
        WorldPretrainOptions options;
        try
        {
            options = WorldPretrainOptions.FromJson(File.ReadAllText(file));
            options.Validate();
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"Invalid options file '{file}': {ex.Message}");
            return 2;
        }
        if (!progressJson) return Run(options, ct);
        var sink = new JsonLineProgress();
        try
        {
            WorldPretrainer.Run(options, sink, ct);
            return 0;
        }
        catch (OperationCanceledException)
        {
            return 130;
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or InvalidOperationException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine(ex.Message);
            return 1;
        }
    }

    /// <summary>Writes every report as one line on standard output, for the parent process.</summary>
    private sealed class JsonLineProgress : IProgress<WorldPretrainProgress>
    {
        private readonly Lock _lock = new();

        public void Report(WorldPretrainProgress value)
        {
            lock (_lock)
            {
                Console.Out.WriteLine(WorldPretrainer.FormatProgressLine(value));
                Console.Out.Flush();
            }
        }
    }

    private static int Execute(string? cache, int seed, int? images, double? scale, bool quick, int threads, bool inProcess, CancellationToken ct)
    {
        var options = quick ? WorldPretrainOptions.Quick(seed) : new WorldPretrainOptions { Seed = seed };
        options.CacheDirectory = cache;
        options.Threads = threads;
        if (images is int n) options.World.Images = options.World.Images with { Train = n };
        if (scale is double s) options.StepsScale = s;
        if (!inProcess) options.LanguageModelHost = ChildProcessHost();
        try
        {
            options.Validate();
        }
        catch (ArgumentException ex)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]Invalid options:[/] {ex.Message}");
            return 2;
        }
        return Run(options, ct);
    }

    private static int Run(WorldPretrainOptions options, CancellationToken ct)
    {
        WorldPretrainResult? result = null;
        var messages = new List<string>();
        try
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var tasks = Phases.ToDictionary(p => p, p => ctx.AddTask(p, autoStart: false, maxValue: 1));
                    var reporter = new Reporter(tasks, messages);
                    result = WorldPretrainer.Run(options, reporter, ct);
                    foreach (var t in tasks.Values) { if (!t.IsStarted) t.StartTask(); t.Value = t.MaxValue; t.StopTask(); }
                });
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or InvalidOperationException or UnauthorizedAccessException)
        {
            foreach (var m in messages) AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]");
            AnsiConsole.MarkupLineInterpolated($"[red]{ex.Message}[/]");
            return 1;
        }
        catch (OperationCanceledException)
        {
            AnsiConsole.MarkupLine("[yellow]Cancelled; finished phases stay cached.[/]");
            return 130;
        }
        foreach (var m in result!.Messages) AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]");
        Summary(result);
        return 0;
    }

    private static string F(double x, string format = "F3") => double.IsNaN(x) ? "-" : x.ToString(format, CultureInfo.InvariantCulture);

    private static void Summary(WorldPretrainResult r)
    {
        var rep = r.Report;
        string Time(string phase) =>
            (rep.Cached.TryGetValue(phase, out var c) && c ? "cached" : "trained") +
            (rep.Seconds.TryGetValue(phase, out var s) ? $" {s:F1} s" : "") +
            (rep.Cached.GetValueOrDefault(phase) && rep.TrainSeconds.TryGetValue(phase, out var t) ? $" (built in {t:F1} s)" : "");
        var table = new Table().Title($"World pretraining (seed {rep.Seed}) in {Markup.Escape(r.CacheDirectory)}")
            .AddColumn("phase").AddColumn("figure").AddColumn(new TableColumn("value").RightAligned()).AddColumn("time");
        table.AddRow("world", "folder", Markup.Escape(r.WorldFolder), Time("world"));
        if (rep.LanguageModel is { } lm)
        {
            table.AddRow("lm", "validation perplexity (corpus ids / full vocab)", $"{F(lm.ValidationPerplexity)} / {F(lm.ValidationPerplexityFullVocabulary)}", Time("lm"));
            table.AddRow("", "caption perplexity (held-out pairs)", $"{F(lm.CaptionPerplexity)} ({F(lm.HeldOutCaptionPerplexity)})", "");
            table.AddRow("", "unigram baseline; token ids used", $"{F(lm.UnigramPerplexity, "F2")}; {lm.TokenIdsUsed}", "");
        }
        if (rep.Clip is { } c)
        {
            table.AddRow("clip", $"test R@1 text→image / image→text ({c.Gallery} pairs)", $"{F(c.TextToImageR1)} / {F(c.ImageToTextR1)}", Time("clip"));
            table.AddRow("", "same attributes text→image / image→text", $"{F(c.TextToImageR1SameAttributes)} / {F(c.ImageToTextR1SameAttributes)}", "");
            table.AddRow("", $"held-out text→image (same attributes), {c.HeldOutGallery} pairs", $"{F(c.HeldOutTextToImageR1)} ({F(c.HeldOutTextToImageR1SameAttributes)})", "");
        }
        if (rep.Classifier is { } k)
            table.AddRow("classifier", "colour+shape on fresh renders", F(k.ColorAndShapeAccuracy), Time("classifier"));
        if (rep.Generator is { } g)
        {
            table.AddRow("generator", $"colour+shape, test captions ({g.TestCaptions})", $"{F(g.TestColorAndShape)} (colour {F(g.TestColor)}, shape {F(g.TestShape)})", Time("generator"));
            table.AddRow("", $"colour+shape, held-out captions ({g.HeldOutCaptions})", $"{F(g.HeldOutColorAndShape)} (colour {F(g.HeldOutColor)}, shape {F(g.HeldOutShape)})", "");
            table.AddRow("", "attempts; ms per image", $"{g.Attempts}; {F(g.MillisecondsPerImage, "F2")}", "");
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLineInterpolated($"Language model: {r.LanguageModelFolder}");
        AnsiConsole.MarkupLineInterpolated($"CLIP text tower: {r.ClipTextFolder}; image tower: {r.ImageEncoderFolder}");
        AnsiConsole.MarkupLineInterpolated($"Generator: {r.GeneratorFolder}; classifier: {r.ClassifierPath}");
        AnsiConsole.MarkupLineInterpolated($"Report: {r.ReportPath}; load average {string.Join(" → ", rep.LoadAverage)}");
    }

    /// <summary>Moves the phase bars (synchronously: reports come from the training thread).</summary>
    private sealed class Reporter(Dictionary<string, ProgressTask> tasks, List<string> messages) : IProgress<WorldPretrainProgress>
    {
        private readonly Lock _lock = new();

        public void Report(WorldPretrainProgress p)
        {
            lock (_lock)
            {
                if (!tasks.TryGetValue(p.Phase, out var task)) return;
                if (!task.IsStarted) task.StartTask();
                if (p.Message is not null)
                {
                    messages.Add($"[{p.Phase}] {p.Message}");
                    if (p.EndsPhase)
                    {
                        task.Value = task.MaxValue;
                        task.StopTask();
                    }
                    return;
                }
                if (p.Total > 0)
                {
                    task.MaxValue = p.Total;
                    task.Value = Math.Min(p.Step, p.Total);
                    if (!double.IsNaN(p.Loss)) task.Description = $"{p.Phase} [grey]loss {p.Loss:F4}[/]";
                }
            }
        }
    }
}
