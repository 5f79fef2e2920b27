using System.CommandLine;
using System.Globalization;
using Gill.ML.World;
using Spectre.Console;

namespace Gill.ML.Cli.Commands;

/// <summary>
/// A subcommand of <c>gill world</c>. Any non-abstract class implementing it (in any file of this assembly) is
/// discovered and added, so new subcommands need no edit here.
/// </summary>
internal interface IWorldSubcommand
{
    /// <summary>Builds the subcommand.</summary>
    Command Build();
}

/// <summary><c>gill world …</c>: the synthetic shapes world (generate data, pretrain backbones on it, …).</summary>
internal sealed class WorldCommandProvider : ICommandProvider
{
    public Command Build()
    {
        var world = new Command("world", "The shapes world: a small synthetic multimodal world (captioned images, stories, dialogues, decision prompts) for CPU-sized GILL experiments");
        foreach (var sub in Subcommands()) world.Subcommands.Add(sub);
        return world;
    }

    /// <summary>Every <see cref="IWorldSubcommand"/> of this assembly, ordered by name.</summary>
    internal static IEnumerable<Command> Subcommands() =>
        typeof(WorldCommandProvider).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && !t.IsInterface && typeof(IWorldSubcommand).IsAssignableFrom(t))
            .Select(t => ((IWorldSubcommand)Activator.CreateInstance(t)!).Build())
            .OrderBy(c => c.Name, StringComparer.Ordinal);
}

/// <summary><c>gill world generate --out DIR …</c>.</summary>
internal sealed class WorldGenerateSubcommand : IWorldSubcommand
{
    public Command Build()
    {
        var d = new ShapesWorldOptions();
        var output = new Option<string>("--out", "-o") { Description = "World folder to write (created if needed)", Required = true };
        var seed = new Option<int>("--seed") { Description = "Seed (same seed → byte-identical files)", DefaultValueFactory = _ => d.Seed };
        var size = new Option<int>("--image-size") { Description = "Image width/height in pixels (32 trains best)", DefaultValueFactory = _ => d.ImageSize };
        var images = new Option<string?>("--images") { Description = $"Captioned images: N (train) or TRAIN,VALIDATION,TEST [default: {Fmt(d.Images)}]" };
        var heldOutImages = new Option<int>("--heldout-images") { Description = "Images of the held-out split", DefaultValueFactory = _ => d.HeldOutImages };
        var stories = new Option<string?>("--stories") { Description = $"Stories: N (train) or TRAIN,VALIDATION,TEST [default: {Fmt(d.Stories)}]" };
        var dialogues = new Option<string?>("--dialogues") { Description = $"Dialogues: N (train) or TRAIN,VALIDATION,TEST [default: {Fmt(d.Dialogues)}]" };
        var decision = new Option<string?>("--decision-prompts") { Description = $"Decision prompts: N (train) or TRAIN,VALIDATION,TEST [default: {Fmt(d.DecisionPrompts)}]" };
        var twoObjects = new Option<double>("--two-object-fraction") { Description = "Fraction of images with two objects", DefaultValueFactory = _ => d.TwoObjectFraction };
        var partial = new Option<double>("--partial-caption-fraction") { Description = "Fraction of captions leaving out size/position", DefaultValueFactory = _ => d.PartialCaptionFraction };
        var heldOut = new Option<string?>("--held-out") { Description = $"Held-out colour:shape pairs, comma-separated ('none' for none) [default: {string.Join(",", d.HeldOutPairs.Select(PairText))}]" };
        var shapes = new Option<string?>("--shapes") { Description = $"Shapes used [default: {string.Join(",", d.Shapes.Select(ShapesWords.Shape))}; also: cross]" };
        var colors = new Option<string?>("--colors") { Description = $"Colours used [default: {string.Join(",", d.Colors.Select(ShapesWords.Color))}; also: cyan, white]" };
        var backgrounds = new Option<string?>("--backgrounds") { Description = "Backgrounds, chosen per image: black, grey, navy, maroon, teal [default: black]" };

        var cmd = new Command("generate", "Generate a shapes world: train/validation/test/held-out images with captions, stories, dialogues, decision prompts and a text corpus");
        foreach (var o in new Option[] { output, seed, size, images, heldOutImages, stories, dialogues, decision, twoObjects, partial, heldOut, shapes, colors, backgrounds })
            cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            ShapesWorldOptions options;
            try
            {
                options = new ShapesWorldOptions
                {
                    Seed = parse.GetValue(seed),
                    ImageSize = parse.GetValue(size),
                    HeldOutImages = parse.GetValue(heldOutImages),
                    TwoObjectFraction = parse.GetValue(twoObjects),
                    PartialCaptionFraction = parse.GetValue(partial),
                };
                if (parse.GetValue(images) is { } i) options.Images = ShapesSplitCounts.Parse(i, options.Images);
                if (parse.GetValue(stories) is { } s) options.Stories = ShapesSplitCounts.Parse(s, options.Stories);
                if (parse.GetValue(dialogues) is { } dl) options.Dialogues = ShapesSplitCounts.Parse(dl, options.Dialogues);
                if (parse.GetValue(decision) is { } dp) options.DecisionPrompts = ShapesSplitCounts.Parse(dp, options.DecisionPrompts);
                if (parse.GetValue(heldOut) is { } h)
                    options.HeldOutPairs = h.Trim().Equals("none", StringComparison.OrdinalIgnoreCase) ? [] : List(h, ShapesPair.Parse);
                if (parse.GetValue(shapes) is { } sh) options.Shapes = List(sh, x => ParseEnum<ShapeKind>(x, "--shapes"));
                if (parse.GetValue(colors) is { } co) options.Colors = List(co, x => ParseEnum<ShapeColor>(x, "--colors"));
                if (parse.GetValue(backgrounds) is { } bg) options.Backgrounds = List(bg, x => ParseEnum<ShapesBackground>(x, "--backgrounds"));
                options.Validate();
            }
            catch (Exception ex) when (ex is FormatException or ArgumentException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]Invalid options:[/] {ex.Message}");
                return 2;
            }
            return Run(options, parse.GetValue(output)!);
        });
        return cmd;
    }

    private static int Run(ShapesWorldOptions options, string folder)
    {
        ShapesWorldManifest? manifest = null;
        var started = DateTime.UtcNow;
        try
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var reporter = new SpectreProgress(ctx);
                    manifest = ShapesWorld.Generate(options, folder, reporter);
                });
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]{ex.Message}[/]");
            return 1;
        }
        var m = manifest!;
        var table = new Table().Title($"Shapes world in {Markup.Escape(m.Folder)} (seed {m.Seed}, {m.ImageSize}×{m.ImageSize}, {(DateTime.UtcNow - started).TotalSeconds:F1} s)")
            .AddColumn("split").AddColumn(new TableColumn("images").RightAligned()).AddColumn(new TableColumn("stories").RightAligned())
            .AddColumn(new TableColumn("dialogues").RightAligned()).AddColumn(new TableColumn("decision prompts").RightAligned())
            .AddColumn(new TableColumn("corpus lines").RightAligned());
        foreach (var split in Enum.GetValues<ShapesSplit>())
        {
            string N(Dictionary<ShapesSplit, ShapesWorldFiles> d) => d.TryGetValue(split, out var f) ? f.Count.ToString(CultureInfo.InvariantCulture) : "-";
            table.AddRow(ShapesWorld.SplitName(split), N(m.Images), N(m.Stories), N(m.Dialogues), N(m.DecisionPrompts), N(m.Corpus));
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLineInterpolated($"{m.PngFiles} PNG files; held out from training: {string.Join(", ", m.Options.HeldOutPairs)}; options hash {m.OptionsHash[..12]}; manifest {Path.Combine(m.Folder, ShapesWorld.ManifestFileName)}");
        return 0;
    }

    private static string Fmt(ShapesSplitCounts c) => $"{c.Train},{c.Validation},{c.Test}";

    private static string PairText(ShapesPair p) => $"{ShapesWords.Color(p.Color)}:{ShapesWords.Shape(p.Shape)}";

    private static T[] List<T>(string text, Func<string, T> parse) =>
        [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(parse)];

    private static T ParseEnum<T>(string text, string option) where T : struct, Enum =>
        Enum.TryParse<T>(text, true, out var v) && Enum.IsDefined(v) ? v
            : throw new FormatException($"{option}: '{text}' is not one of {string.Join(", ", Enum.GetNames<T>()).ToLowerInvariant()}.");

    /// <summary>Forwards progress synchronously (generation reports from worker threads) to one Spectre task per stage.</summary>
    private sealed class SpectreProgress(ProgressContext ctx) : IProgress<ShapesWorldProgress>
    {
        private readonly Dictionary<string, ProgressTask> _tasks = [];
        private readonly Lock _lock = new();

        public void Report(ShapesWorldProgress value)
        {
            lock (_lock)
            {
                if (!_tasks.TryGetValue(value.Stage, out var task))
                    _tasks[value.Stage] = task = ctx.AddTask(value.Stage, maxValue: Math.Max(1, value.Total));
                task.Value = value.Total == 0 ? task.MaxValue : value.Completed;
            }
        }
    }
}

/// <summary><c>gill world classifier --out FILE</c>: trains the attribute classifier used to score generated images.</summary>
internal sealed class WorldClassifierSubcommand : IWorldSubcommand
{
    public Command Build()
    {
        var d = new ShapesAttributeClassifier.Options();
        var output = new Option<string>("--out", "-o") { Description = "Where to save the classifier (.safetensors)", Required = true };
        var seed = new Option<int>("--seed") { Description = "Seed", DefaultValueFactory = _ => d.Seed };
        var size = new Option<int>("--image-size") { Description = "Image width/height it reads", DefaultValueFactory = _ => d.ImageSize };
        var images = new Option<int>("--images") { Description = "Rendered training images", DefaultValueFactory = _ => d.TrainImages };
        var epochs = new Option<int>("--epochs") { Description = "Epochs", DefaultValueFactory = _ => d.Epochs };
        var shapes = new Option<string?>("--shapes") { Description = "Shapes it tells apart [default: the world's default shapes]" };
        var colors = new Option<string?>("--colors") { Description = "Colours it tells apart [default: the world's default colours]" };
        var device = new Option<string>("--device") { Description = "Torch device", DefaultValueFactory = _ => d.Device };
        var cmd = new Command("classifier", "Train the colour/shape/size/position classifier that scores generated shapes-world images");
        foreach (var o in new Option[] { output, seed, size, images, epochs, shapes, colors, device }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var options = new ShapesAttributeClassifier.Options
            {
                Seed = parse.GetValue(seed), ImageSize = parse.GetValue(size), TrainImages = parse.GetValue(images),
                Epochs = parse.GetValue(epochs), Device = parse.GetValue(device)!,
            };
            try
            {
                if (parse.GetValue(shapes) is { } sh)
                    options.Shapes = [.. sh.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x => Enum.Parse<ShapeKind>(x, true))];
                if (parse.GetValue(colors) is { } co)
                    options.Colors = [.. co.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x => Enum.Parse<ShapeColor>(x, true))];
                options.Validate();
            }
            catch (ArgumentException ex)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]Invalid options:[/] {ex.Message}");
                return 2;
            }
            var sw = System.Diagnostics.Stopwatch.StartNew();
            ShapesAttributeClassifier? model = null;
            AnsiConsole.Progress().Start(ctx =>
            {
                var task = ctx.AddTask("training");
                model = ShapesAttributeClassifier.Train(options, new SyncProgress<ShapesClassifierProgress>(p =>
                {
                    task.MaxValue = p.TotalSteps;
                    task.Value = p.Step;
                    task.Description = $"epoch {p.Epoch}, loss {p.Loss:F3}";
                }));
            });
            using var trained = model!;
            double seconds = sw.Elapsed.TotalSeconds;
            var m = trained.EvaluateRendered(1000, options.Seed + 1);
            trained.Save(parse.GetValue(output)!);
            var table = new Table().Title($"Attribute classifier ({seconds:F1} s), 1000 unseen renders").AddColumn("attribute").AddColumn(new TableColumn("accuracy").RightAligned());
            table.AddRow("colour", $"{m.ColorAccuracy:P1}").AddRow("shape", $"{m.ShapeAccuracy:P1}").AddRow("colour + shape", $"{m.ColorAndShapeAccuracy:P1}")
                .AddRow("size", $"{m.SizeAccuracy:P1}").AddRow("position", $"{m.PositionAccuracy:P1}");
            AnsiConsole.Write(table);
            return 0;
        });
        return cmd;
    }

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
