using System.CommandLine;
using System.Globalization;
using Gill.ML.Evaluation.Demo;
using Gill.ML.World.Pretraining;
using Spectre.Console;

namespace Gill.ML.Cli.Commands;

/// <summary><c>gill demo [--cache DIR] [--out DIR] [--seed N] [--images N] [--steps N] [--quick]</c>.</summary>
internal sealed class DemoCommandProvider : ICommandProvider
{
    private static readonly string[] Phases = ["pretraining", .. DemoRunner.PretrainingPhases.Select(p => DemoRunner.PretrainingPrefix + p), "training", "inference", "evaluation", "encoders", "report"];

    public Command Build()
    {
        var cache = new Option<string?>("--cache") { Description = "Cache folder of the world and its pretrained backbones [default: ~/.cache/gill/world-<hash of the options>]" };
        var output = new Option<string>("--out") { Description = "Output folder (model zip, report.html, figures.json)", DefaultValueFactory = _ => "gill-demo" };
        var seed = new Option<int>("--seed") { Description = "Seed of the world, the pretraining and GILL's training", DefaultValueFactory = _ => 0 };
        var images = new Option<int>("--images") { Description = "Test images in the retrieval gallery and the attribute evaluation", DefaultValueFactory = _ => 100 };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps of GILL's joint training", DefaultValueFactory = _ => new DemoOptions().Steps };
        var worldImages = new Option<int?>("--world-images") { Description = "Captioned training images of the world [default: 20000; 4000 with --quick]" };
        var imageSize = new Option<int?>("--image-size") { Description = "Rendered image size in pixels [default: 32]" };
        var stepsScale = new Option<double?>("--steps-scale") { Description = "Multiplies every pretraining phase's steps [default: 1; 0.25 with --quick]" };
        var paper = new Option<string?>("--paper") { Description = "Output folder of 'gill eval paper' to link from the report [default: a gill-paper folder beside --out]" };
        var distill = new Option<int?>("--mapper-epochs") { Description = "Epochs of mapper-only distillation on cached [IMG] states after the joint steps (0: off) [default: 12]" };
        var quick = new Option<bool>("--quick") { Description = "Quick world backbones (smaller world, a quarter of the pretraining steps)" };
        var batch = new Option<int?>("--batch-size") { Description = "Examples per optimizer step of GILL's joint training [default: 16]" };
        var lr = new Option<double?>("--lr") { Description = "Peak learning rate of GILL's joint training [default: 2e-3]" };
        var threads = new Option<int?>("--threads") { Description = "Torch CPU threads (0: leave libtorch's setting) [default: 1]" };
        var compare = new Option<int>("--compare-resnet18") { Description = "Also train GILL for N joint steps on the world image tower and on ImageNet ResNet-18 features and report both retrieval figures (0: off; ~4 extra minutes for 100)", DefaultValueFactory = _ => 0 };
        var inProcess = new Option<bool>("--in-process") { Description = "Pretrain the language model in this process before the other backbones (by default, on machines with two or more cores, a child process trains it beside them; same checkpoint)" };
        var cmd = new Command("demo", "GILL end to end on the shapes world: pretrain the backbones (cached), train GILL, run stories and dialogues, write an HTML report with every figure against its baseline");
        foreach (var o in new Option[] { cache, output, seed, images, steps, quick, batch, lr, threads, distill, worldImages, imageSize, stepsScale, paper, inProcess, compare }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) => Task.FromResult(Execute(new DemoOptions
        {
            CacheDirectory = parse.GetValue(cache),
            OutputDirectory = parse.GetValue(output) ?? "gill-demo",
            Seed = parse.GetValue(seed),
            EvaluationImages = parse.GetValue(images),
            Steps = parse.GetValue(steps),
            Quick = parse.GetValue(quick),
            PaperResultsDirectory = parse.GetValue(paper),
            CompareResNet18Steps = parse.GetValue(compare),
            LanguageModelHost = parse.GetValue(inProcess) ? null : WorldPretrainSubcommand.ChildProcessHost(),
        }.With(parse.GetValue(batch), parse.GetValue(lr), parse.GetValue(threads), parse.GetValue(distill), parse.GetValue(worldImages), parse.GetValue(imageSize), parse.GetValue(stepsScale)), ct)));
        return cmd;
    }

    private static int Execute(DemoOptions options, CancellationToken ct)
    {
        try
        {
            options.Validate();
        }
        catch (ArgumentException ex)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]Invalid options:[/] {ex.Message}");
            return 2;
        }

        DemoResult? result = null;
        try
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var tasks = Phases.ToDictionary(p => p, p => ctx.AddTask(p, autoStart: false, maxValue: 1));
                    result = DemoRunner.Run(options, new Reporter(tasks), ct);
                    foreach (var t in tasks.Values) { if (!t.IsStarted) t.StartTask(); t.Value = t.MaxValue; t.StopTask(); }
                });
        }
        catch (OperationCanceledException)
        {
            AnsiConsole.MarkupLine("[yellow]Cancelled.[/]");
            return 130;
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or InvalidOperationException or UnauthorizedAccessException)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]Demo failed:[/] {ex.Message}");
            return 1;
        }

        var r = result!;
        var table = new Table().AddColumns("figure", "value", "baseline", "baseline value", "N");
        foreach (var f in r.Figures.All)
            table.AddRow(Markup.Escape(f.Name), F(f.Value), Markup.Escape(f.BaselineName), F(f.Baseline), f.N.ToString(CultureInfo.InvariantCulture));
        AnsiConsole.Write(table);
        var timing = new Table().AddColumns("phase", "seconds");
        foreach (var (phase, sec) in r.Figures.Seconds) timing.AddRow(phase, sec.ToString("0.0", CultureInfo.InvariantCulture));
        AnsiConsole.Write(timing);
        AnsiConsole.MarkupLineInterpolated($"Report: [green]{r.ReportPath}[/]");
        AnsiConsole.MarkupLineInterpolated($"Figures: {r.FiguresPath}   Model: {r.ModelPath}   Backbones: {r.CacheDirectory}");
        return 0;
    }

    private static string F(double v) => double.IsFinite(v) ? v.ToString("0.000", CultureInfo.InvariantCulture) : "n/a";

    private sealed class Reporter(Dictionary<string, ProgressTask> tasks) : IProgress<DemoProgress>
    {
        private readonly Lock _lock = new();

        public void Report(DemoProgress value)
        {
            lock (_lock) Move(value);
        }

        private void Move(DemoProgress value)
        {
            if (!tasks.TryGetValue(value.Phase, out var task)) return;
            if (value.Phase.StartsWith(DemoRunner.PretrainingPrefix, StringComparison.Ordinal))
            {
                // A pretraining sub-phase: steps move the bar; "cached …", "using …" and "done …" complete it.
                if (!task.IsStarted) task.StartTask();
                if (value.Total > 0) { task.MaxValue = value.Total; task.Value = Math.Min(value.Step, value.Total); }
                string sub = value.Phase[DemoRunner.PretrainingPrefix.Length..];
                if (value.Loss is double sl && double.IsFinite(sl)) task.Description = Markup.Escape($"  {sub} (loss {sl:F3})");
                if (value.Message is { } msg && WorldPretrainProgress.IsPhaseEnd(msg))
                {
                    task.Value = task.MaxValue;
                    task.Description = Markup.Escape($"  {sub} ({msg})");
                    task.StopTask();
                }
                return;
            }
            if (!task.IsStarted) task.StartTask();
            task.MaxValue = Math.Max(1, value.Total);
            task.Value = Math.Min(value.Step, task.MaxValue);
            string detail = value.Loss is double l && double.IsFinite(l) ? $" (loss {l:F3})" : value.Message is { Length: > 0 } m ? $" ({m})" : "";
            task.Description = Markup.Escape(value.Phase + detail);
            if (value.Step >= value.Total && value.Total > 0 && value.Message is not null && value.Loss is null && value.Phase != "pretraining") task.StopTask();
        }
    }
}

internal static class DemoOptionsExtensions
{
    /// <summary>Applies the optional command-line overrides, keeping the library defaults where none is given.</summary>
    public static DemoOptions With(this DemoOptions options, int? batchSize, double? learningRate, int? threads, int? mapperEpochs, int? worldImages, int? imageSize, double? stepsScale)
    {
        options.WorldImages = worldImages ?? options.WorldImages;
        options.ImageSize = imageSize ?? options.ImageSize;
        options.PretrainStepsScale = stepsScale ?? options.PretrainStepsScale;
        if (mapperEpochs is int e) options.MapperDistillationEpochs = e;
        if (batchSize is int b) options.BatchSize = b;
        if (learningRate is double lr) options.LearningRate = lr;
        if (threads is int t) options.Threads = t;
        return options;
    }
}
