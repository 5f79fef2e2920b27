using System.CommandLine;
using Gill.ML.Inference;
using Gill.ML.Retrieval;
using Spectre.Console;

namespace Gill.ML.Cli.Commands;

/// <summary><c>gill index build|info</c>: retrieval galleries.</summary>
internal sealed class IndexCommandProvider : ICommandProvider
{
    public Command Build()
    {
        var index = new Command("index", "Retrieval galleries: normalised W_i2t embeddings of images, memory-mapped at query time");
        index.Subcommands.Add(BuildCommand());
        index.Subcommands.Add(InfoCommand());
        return index;
    }

    private static Command BuildCommand()
    {
        var model = new Option<string>("--model", "-m") { Description = "GILL model folder (its visual encoder and W_i2t are used)", Required = true };
        var images = new Option<string>("--images") { Description = "Folder of images (recursive; ids are relative paths)", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Index file to write", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "fp32 | fp16", DefaultValueFactory = _ => "fp32" };
        var batch = new Option<int>("--batch-size") { Description = "Images per encoder call", DefaultValueFactory = _ => 32 };
        var cmd = new Command("build", "Build a retrieval index from a folder of images");
        foreach (var o in new Option[] { model, images, output, dtype, batch }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var dt = parse.GetValue(dtype)!.ToLowerInvariant() switch
            {
                "fp32" or "float32" => GillIndexDType.Float32,
                "fp16" or "float16" => GillIndexDType.Float16,
                var d => (GillIndexDType?)null,
            };
            if (dt is null)
            {
                AnsiConsole.MarkupLine("[red]Invalid options:[/] --dtype must be fp32 or fp16.");
                return 2;
            }
            try
            {
                using var m = GillModel.Load(parse.GetValue(model)!, new GillModelLoadOptions { LoadIndexes = false });
                if (m.VisualEncoder is null) throw new InvalidOperationException("The model folder defines no visual_encoder; an index needs one.");
                long count = 0;
                AnsiConsole.Progress()
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask("indexing");
                        var progress = new Progress<GillIndexBuildProgress>(p => { task.MaxValue = p.Total; task.Value = p.Done; });
                        count = GillRetrievalIndexBuilder.BuildFromFolder(m.Core, m.VisualEncoder, parse.GetValue(images)!, parse.GetValue(output)!,
                            dt.Value, parse.GetValue(batch), progress);
                    });
                AnsiConsole.MarkupLineInterpolated($"[green]Indexed {count} images[/] into {parse.GetValue(output)}");
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or InvalidOperationException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{e.Message}[/]");
                return 1;
            }
        });
        return cmd;
    }

    private static Command InfoCommand()
    {
        var file = new Argument<string>("file") { Description = "Index file" };
        var cmd = new Command("info", "Show an index's header and verify its checksum");
        cmd.Arguments.Add(file);
        cmd.SetAction(parse =>
        {
            try
            {
                using var index = GillRetrievalIndex.Open(parse.GetValue(file)!);
                var table = new Table().AddColumn("field").AddColumn("value");
                table.AddRow("images", index.Count.ToString(System.Globalization.CultureInfo.InvariantCulture));
                table.AddRow("dimension", index.Dimension.ToString(System.Globalization.CultureInfo.InvariantCulture));
                table.AddRow("dtype", index.DType.ToString());
                table.AddRow("model hash", Convert.ToHexString(index.ModelHash));
                table.AddRow("checksum", "ok");
                AnsiConsole.Write(table);
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{e.Message}[/]");
                return 1;
            }
        });
        return cmd;
    }
}
