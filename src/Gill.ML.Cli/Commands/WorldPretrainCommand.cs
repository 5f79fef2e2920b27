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
        var sequential = new Option<bool>("--sequential") { Description = "Train the phases one after another (by default the language model trains beside the CLIP → classifier → generator chain on machines with two or more cores; the checkpoints are the same)" };
        var cmd = new Command("pretrain", "Pretrain the shapes world's own backbones (OPT language model, CLIP text tower + CNN image tower, text-to-image decoder, attribute classifier), cached with SHA-256 manifests");
        foreach (var o in new Option[] { cache, seed, images, scale, quick, threads, sequential }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) => Task.FromResult(Execute(parse.GetValue(cache), parse.GetValue(seed), parse.GetValue(images), parse.GetValue(scale), parse.GetValue(quick), parse.GetValue(threads), parse.GetValue(sequential), ct)));
        return cmd;
    }

    private static int Execute(string? cache, int seed, int? images, double? scale, bool quick, int threads, bool sequential, CancellationToken ct)
    {
        var options = quick ? WorldPretrainOptions.Quick(seed) : new WorldPretrainOptions { Seed = seed };
        options.CacheDirectory = cache;
        options.Threads = threads;
        if (sequential) options.ConcurrentPhases = false;
        if (images is int n) options.World.Images = options.World.Images with { Train = n };
        if (scale is double s) options.StepsScale = s;
        try
        {
            options.Validate();
        }
        catch (ArgumentException ex)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]Invalid options:[/] {ex.Message}");
            return 2;
        }

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
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
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

    /// <summary>Moves the phase bars (synchronously; the two training branches report one at a time).</summary>
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
                    if (p.Message.StartsWith("cached", StringComparison.Ordinal) || p.Message.StartsWith("using", StringComparison.Ordinal) || p.Message.StartsWith("done", StringComparison.Ordinal))
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
